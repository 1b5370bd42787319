# Copyright (c) yolact_d2 contributors.
"""Helpers shared by the tests."""

import glob
import importlib.util
import os

import cv2
import torch

from detectron2.modeling import build_model

import yolact_d2  # noqa: F401  (registers the model)
from yolact_d2.benchmark.calibration import (  # noqa: F401  (used by the tests)
    BOX_GROWTH,
    DETECTION_SPREADS,
    calibrate_batch_norm,
    calibrate_detections,
)
from yolact_d2.data.datasets import tiny_coco_root
from yolact_d2.engine.cli import load_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")


def load_script(relative_path: str):
    """A script of the checkout (``tools/demo.py``, ``train_net.py``) loaded as a new module, to
    call its functions in the test's process; each call loads it afresh."""
    path = os.path.join(REPO_ROOT, relative_path)
    name = "script_" + os.path.splitext(relative_path)[0].replace(os.sep, "_")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    base = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"]
    return load_config(os.path.join(CONFIG_DIR, name), base + list(opts), setup=False)


def get_model(name: str, opts=(), seed: int = 0):
    """An eval-mode model with seeded random weights."""
    torch.manual_seed(seed)
    return build_model(get_config(name, opts)).eval()


def tiny_coco_images(split: str, count: int):
    """The first ``count`` images of tiny_coco's ``split`` ("train2017", "val2017"), BGR."""
    files = sorted(glob.glob(os.path.join(tiny_coco_root(), split, "*.jpg")))[:count]
    return [cv2.imread(f) for f in files]
