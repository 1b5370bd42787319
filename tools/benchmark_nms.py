#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Fast NMS, traditional per-class NMS, cross-class Fast NMS and torchvision's batched_nms on the
same realistic candidate sets (all priors of a YOLACT input, 80 classes, after the 0.05
pre-filter; per-class top-200 where the method uses it): time, and how their kept detections
differ from Fast NMS's; mask/box AP per method when weights are given.

Example::

    python tools/benchmark_nms.py --source synthetic --dataset tiny_coco_val --threads 2
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import argparse
import logging
import os

import torch

from detectron2.utils.logger import setup_logger

from yolact_d2.benchmark import (
    NMS_COLUMNS,
    NMS_METHODS,
    benchmark_nms,
    build_predictor,
    cpu_load,
    dataset_objects,
    default_image_dir,
    image_files,
    load_config_spec,
    load_images,
    markdown_table,
    model_candidate_sets,
    nms_ap,
    synthetic_candidate_sets,
    write_csv,
    yolact_priors,
)
from yolact_d2.engine.cli import tool_parser


def get_parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__, config_file=False)
    parser.add_argument(
        "--config",
        default="yolact_R_50_FPN_550.yaml",
        help="YOLACT config: input size, priors and NMS settings",
    )
    parser.add_argument(
        "--source",
        choices=["synthetic", "model"],
        default="synthetic",
        help="synthetic: detector-like candidates around the dataset's ground-"
        "truth objects; model: the model's own outputs on --images",
    )
    parser.add_argument("--dataset", default="tiny_coco_val", help="objects for --source synthetic")
    parser.add_argument("--images", metavar="DIR", help="images for --source model")
    parser.add_argument("--num-images", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per image and method")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--weights", help="YOLACT weights (model source, and AP per method)")
    parser.add_argument("--eval-dataset", default="tiny_coco_val", help="dataset for AP")
    parser.add_argument("--eval-images", type=int, help="evaluate AP on the first N images only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="output/benchmark_nms")
    return parser


def _candidate_sets(args, cfg):
    if args.source == "synthetic":
        objects = dataset_objects(args.dataset, args.num_images)
        return synthetic_candidate_sets(
            yolact_priors(cfg),
            objects,
            args.seed,
            cfg.MODEL.YOLACT.NUM_CLASSES,
            cfg.MODEL.YOLACT.TEST.SCORE_THRESH,
        )
    predictor = build_predictor(
        args.config, "fp32", opts=args.opts, weights=args.weights, seed=args.seed
    )
    files = image_files(args.images or default_image_dir(), args.num_images)
    return model_candidate_sets(predictor, load_images(files))


def main(args) -> list:
    logger = setup_logger(name="yolact_d2")
    torch.set_num_threads(args.threads)
    os.makedirs(args.output, exist_ok=True)
    cfg = load_config_spec(args.config, args.opts)
    test = cfg.MODEL.YOLACT.TEST
    settings = {
        "iou_threshold": test.NMS_THRESH,
        "top_k": test.TOP_K,
        "max_num_detections": test.DETECTIONS_PER_IMAGE,
        "score_threshold": test.SCORE_THRESH,
        "input_size": cfg.MODEL.YOLACT.INPUT_SIZE,
    }
    candidate_sets = _candidate_sets(args, cfg)
    logger.info(f"{len(candidate_sets)} candidate sets ({args.source}); load {cpu_load()}")
    rows = benchmark_nms(candidate_sets, args.repeats, NMS_METHODS, settings)
    if args.weights:
        ap = nms_ap(
            args.config,
            args.weights,
            args.eval_dataset,
            args.output,
            [r["nms_type"] for r in rows],
            args.eval_images,
            args.opts,
        )
        for row in rows:
            row.update(ap[row["nms_type"]])
    text = markdown_table(rows, NMS_COLUMNS)
    note = (
        f"source: {args.source}, {len(candidate_sets)} images, {args.repeats} repeats, "
        f"{args.threads} threads, settings {settings}, load average after: {cpu_load()}"
    )
    print(text + "\n\n" + note)
    with open(os.path.join(args.output, "nms_results.md"), "w") as f:
        f.write(text + "\n\n" + note + "\n")
    write_csv(rows, os.path.join(args.output, "nms_results.csv"), NMS_COLUMNS)
    logging.getLogger("yolact_d2").info(
        f"wrote nms_results.md and nms_results.csv to {args.output}"
    )
    return rows


if __name__ == "__main__":
    main(get_parser().parse_args())
