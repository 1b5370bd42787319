#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Trains a small YOLACT from scratch on the generated synthetic shapes dataset, evaluates it with
COCOEvaluator, prints the AP tables and writes drawings of its predictions.

    python tools/train_synthetic_demo.py [KEY VALUE ...]   # config overrides
"""

import os
import sys

import torch

from detectron2.config import get_cfg

import yolact_d2
from yolact_d2.data import setup_datasets
from yolact_d2.engine.demo import run_synthetic_demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "demo", "yolact_R_18_synthetic.yaml")


def main(opts):
    cfg = get_cfg()
    yolact_d2.add_yolact_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    cfg.merge_from_list(opts)
    cfg.freeze()
    out = run_synthetic_demo(setup_datasets(cfg))
    segm, bbox = out["results"].get("segm", {}), out["results"].get("bbox", {})
    print(
        f"\nmask AP {segm.get('AP', float('nan')):.1f}  box AP {bbox.get('AP', float('nan')):.1f}"
    )
    print(
        f"training {out['train_seconds'] / 60:.1f} min, total {out['total_seconds'] / 60:.1f} min"
    )
    print("drawings: " + ", ".join(out["drawings"][-1:]))


if __name__ == "__main__":
    main(sys.argv[1:])
