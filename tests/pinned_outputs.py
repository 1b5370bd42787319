# Copyright (c) yolact_d2 contributors.
"""
Outputs of seeded random-weight models on fixed inputs, pinned before a refactor so that the
refactor can show it changed nothing: detections (classes, scores, boxes, mask areas) of two
configs on a real photo, and the training losses of a fixed tiny_coco batch.

    python tests/pinned_outputs.py --write    # (re)writes tests/data/pinned_outputs.json

Write it only from code whose outputs are known to be right; the test compares against it.
"""

import argparse
import json
import numpy as np
import os

import torch

from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultPredictor

from yolact_d2.data import YolactDatasetMapper

from common import calibrate_batch_norm, get_config

PINNED_FILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "data", "pinned_outputs.json"
)
# (config, overrides): a YOLACT and a YOLACT++ model; every prior is a candidate.
CONFIGS = {
    "yolact_R_50_FPN_550": ("yolact_R_50_FPN_550.yaml", []),
    "yolact_plus_R_50_FPN_550": ("yolact_plus_R_50_FPN_550.yaml", []),
}
TOP = 20  # detections pinned per model
TRAIN_OPTS = [
    "MODEL.YOLACT.INPUT_SIZE", 320,
    "INPUT.YOLACT.PHOTOMETRIC", False,
    "INPUT.YOLACT.EXPAND", False,
    "INPUT.YOLACT.RANDOM_SAMPLE_CROP", False,
    "INPUT.YOLACT.MIRROR", False,
]  # fmt: skip


def photo():
    """A 333 x 417 BGR crop of scikit-image's astronaut (not a multiple of 32)."""
    from skimage.data import astronaut

    return np.ascontiguousarray(astronaut()[:333, :417, ::-1])


def detections(name):
    config, opts = CONFIGS[name]
    torch.manual_seed(0)
    predictor = DefaultPredictor(get_config(config, opts))
    calibrate_batch_norm(predictor.model, photo()[:, :, ::-1])
    with torch.no_grad():
        inst = predictor(photo())["instances"]
    out = {
        "count": len(inst),
        "classes": inst.pred_classes[:TOP].tolist(),
        "scores": inst.scores[:TOP].tolist(),
        "boxes": inst.pred_boxes.tensor[:TOP].tolist(),
        "mask_areas": inst.pred_masks[:TOP].sum(dim=(1, 2)).tolist(),
    }
    if inst.has("mask_scores"):
        out["mask_scores"] = inst.mask_scores[:TOP].tolist()
    return out


def training_losses(config="yolact_R_50_FPN_550.yaml"):
    """Losses of a seeded model (train mode) on the first two tiny_coco_train images."""
    cfg = get_config(config, TRAIN_OPTS)
    torch.manual_seed(0)
    from detectron2.modeling import build_model

    model = build_model(cfg).train()
    mapper = YolactDatasetMapper(cfg, True)
    batch = [mapper(record) for record in DatasetCatalog.get("tiny_coco_train")[:2]]
    with torch.no_grad():
        losses = model(batch)
    return {k: float(v) for k, v in sorted(losses.items())}


def compute_all():
    return {
        "detections": {name: detections(name) for name in CONFIGS},
        "losses": training_losses(),
        "losses_plus": training_losses("yolact_plus_R_50_FPN_550.yaml"),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--write", action="store_true", help="write " + PINNED_FILE)
    args = parser.parse_args()
    values = compute_all()
    print(json.dumps(values, indent=1)[:2000])
    if args.write:
        os.makedirs(os.path.dirname(PINNED_FILE), exist_ok=True)
        with open(PINNED_FILE, "w") as f:
            json.dump(values, f, indent=1)
        print(f"wrote {PINNED_FILE}")
