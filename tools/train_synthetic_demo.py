#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Trains a small YOLACT from scratch on the generated synthetic shapes dataset, evaluates it with
COCOEvaluator, prints the AP tables and writes drawings of its predictions.

    python tools/train_synthetic_demo.py [KEY VALUE ...]   # config overrides (or --opts ...)
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import os
import sys

import torch

from yolact_d2.engine.cli import tool_config_or_exit, tool_parser
from yolact_d2.engine.demo import run_synthetic_demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "demo", "yolact_R_18_synthetic.yaml")


def main(argv):
    opts = tool_parser(__doc__, config_file=False).parse_args(argv).opts
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = tool_config_or_exit(CONFIG, ["MODEL.DEVICE", device] + list(opts))
    cfg.freeze()
    out = run_synthetic_demo(cfg)
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
