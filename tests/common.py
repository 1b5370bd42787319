# Copyright (c) yolact_d2 contributors.
"""Helpers shared by the tests."""

import numpy as np
import os

import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model

import yolact_d2

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


def calibrate_batch_norm(model, image):
    """
    Sets every BatchNorm's running statistics to those of ``image`` (one train-mode forward
    with cumulative averaging), so that a randomly initialised network normalises its
    activations and makes detections of realistic confidence instead of saturated ones.

    Args:
        model (Yolact): the model (left in eval mode).
        image (ndarray or Tensor): (H, W, 3) uint8 in the model's input format, or (3, H, W).
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    image = torch.as_tensor(np.ascontiguousarray(image))
    if image.shape[-1] == 3:
        image = image.permute(2, 0, 1)
    model.train()
    with torch.no_grad():
        model.predict(model.preprocess_image([{"image": image}]))
    model.eval()
