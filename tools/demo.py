#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Runs a YOLACT config on images through Detectron2's DefaultPredictor and saves drawings.

    python tools/demo.py --config-file configs/yolact_R_50_FPN_550.yaml --input a.jpg b.jpg \
        --output out/ MODEL.WEIGHTS converted.pth

Without --input it uses the astronaut photo shipped with scikit-image.
"""

import argparse
import os

import cv2

from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor

import yolact_d2
from yolact_d2.data import setup_datasets
from yolact_d2.utils import draw_predictions


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", nargs="*", default=[], help="image files")
    parser.add_argument("--output", default="output/demo", help="directory for the drawings")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args()


def load_images(paths):
    if not paths:
        from skimage.data import astronaut

        yield "astronaut.jpg", cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
        return
    for path in paths:
        image = cv2.imread(path)
        if image is None:
            raise SystemExit(f"error: cannot read image {path!r}")
        yield os.path.basename(path), image


def main():
    args = parse_args()
    cfg = get_cfg()
    yolact_d2.add_yolact_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    cfg = setup_datasets(cfg)  # DATASETS.REGISTER_COCO (class names) and NUM_CLASSES
    predictor = DefaultPredictor(cfg)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    os.makedirs(args.output, exist_ok=True)
    for name, bgr in load_images(args.input):
        instances = predictor(bgr)["instances"]
        drawing = draw_predictions(
            bgr[:, :, ::-1], instances, metadata, cfg.MODEL.YOLACT.TEST.DISPLAY_SCORE_THRESH
        )
        out = os.path.join(args.output, os.path.splitext(name)[0] + ".png")
        cv2.imwrite(out, drawing[:, :, ::-1])
        print(f"{name}: {len(instances)} detections -> {out}")


if __name__ == "__main__":
    main()
