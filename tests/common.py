# Copyright (c) yolact_d2 contributors.
"""Helpers shared by the tests."""

import os

import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model

import yolact_d2
from yolact_d2.benchmark.calibration import (  # noqa: F401  (used by the tests)
    BOX_GROWTH,
    DETECTION_SPREADS,
    calibrate_batch_norm,
    calibrate_detections,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")

# The configs of issue 2 and their reference counterparts.
V1_CONFIGS = {
    "yolact_R_50_FPN_550.yaml": "yolact_resnet50",
    "yolact_R_101_FPN_550.yaml": "yolact_base",
    "yolact_R_101_FPN_400.yaml": "yolact_im400",
    "yolact_R_101_FPN_700.yaml": "yolact_im700",
    "yolact_DarkNet53_FPN_550.yaml": "yolact_darknet53",
}
PLUS_CONFIGS = {
    "yolact_plus_R_50_FPN_550.yaml": "yolact_plus_resnet50",
    "yolact_plus_R_101_FPN_550.yaml": "yolact_plus_base",
}


def get_config(name: str, opts=()):
    """A frozen-free cfg for ``configs/<name>`` on CPU (or CUDA when available) with no weights."""
    cfg = get_cfg()
    yolact_d2.add_yolact_config(cfg)
    cfg.merge_from_file(os.path.join(CONFIG_DIR, name))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.merge_from_list(list(opts))
    return cfg


def get_model(name: str, opts=(), seed: int = 0):
    """An eval-mode model with seeded random weights."""
    torch.manual_seed(seed)
    return build_model(get_config(name, opts)).eval()
