# Copyright (c) yolact_d2 contributors.
"""Helpers shared by the tests."""

import math
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


def _as_chw(image):
    image = torch.as_tensor(np.ascontiguousarray(image))
    return image.permute(2, 0, 1) if image.shape[-1] == 3 else image


def calibrate_batch_norm(model, image):
    """
    Sets every BatchNorm's running statistics to those of ``image`` (one train-mode forward
    with cumulative averaging; several images are averaged), so that a randomly initialised
    network normalises its activations and makes detections of realistic confidence instead of
    saturated ones.

    Args:
        model (Yolact): the model (left in eval mode).
        image (ndarray or Tensor, or a list of them): (H, W, 3) uint8 in the model's input
            format, or (3, H, W).
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    images = image if isinstance(image, (list, tuple)) else [image]
    model.train()
    with torch.no_grad():
        for one in images:
            model.predict(model.preprocess_image([{"image": _as_chw(one)}]))
        # Nearly dead channels (variance ~0) would divide rounding errors by ~sqrt(eps): no
        # channel's variance is taken below its layer's median, as in a well-conditioned net.
        for norm in norms:
            norm.running_var.clamp_(min=float(norm.running_var.median()))
    model.eval()


# Output spreads calibrate_detections sets: class logits, box deltas, coefficients before
# tanh, and the prototypes (scaled so that the mask logits P C^T spread this much).
DETECTION_SPREADS = {"cls_score": 2.5, "bbox_pred": 0.3, "coefficients": 1.0, "mask_logits": 4.0}
# Boxes made this many times their priors' size on average (masks in boxes of a few prototype
# pixels are all on or all off).
BOX_GROWTH = 2.5


def _scale_conv(conv, factor):
    with torch.no_grad():
        conv.weight.mul_(factor)
        if conv.bias is not None:
            conv.bias.mul_(factor)


def calibrate_detections(model, images, spreads=DETECTION_SPREADS):
    """
    Makes a random-weight model detect like a trained one on images like ``images``:
    BatchNorm statistics from them (:func:`calibrate_batch_norm`), then the last layers
    rescaled (weights and bias by one factor each, an exact linear change) so that over these
    images the class logits, box deltas, coefficients and mask logits have the standard
    deviations of ``spreads``: distinct, unsaturated scores, boxes of their priors' real sizes,
    masks neither empty nor full.

    Args:
        model (Yolact): the model (left in eval mode).
        images (list[ndarray]): (H, W, 3) uint8 images in the model's input format.
    """
    calibrate_batch_norm(model, images)
    head = model.head
    captured = {}
    hooks = [
        getattr(head, name).register_forward_hook(
            lambda m, i, o, name=name: captured.setdefault(name, []).append(
                o.transpose(0, 1).flatten(1)
            )
        )
        for name in ("cls_score", "bbox_pred", "coefficients")
    ]
    inputs = [model.preprocess_image([{"image": _as_chw(image)}]) for image in images]
    with torch.no_grad():
        for x in inputs:
            model.predict(x)
    for hook in hooks:
        hook.remove()
    for name, outputs in captured.items():
        outputs = torch.cat(outputs, dim=1)  # (channels, positions)
        conv = getattr(head, name)
        if name == "coefficients":
            # Centred per channel, so that the mask logits P C^T (P >= 0) centre on 0.
            with torch.no_grad():
                conv.bias.sub_(outputs.mean(dim=1))
            outputs = outputs - outputs.mean(dim=1, keepdim=True)
        _scale_conv(conv, spreads[name] / float(outputs.std()))
        if name == "bbox_pred":
            with torch.no_grad():  # channels (dx, dy, dw, dh) per anchor
                conv.bias.view(-1, 4)[:, 2:] += math.log(BOX_GROWTH) / model.box_variances[1]
    with torch.no_grad():
        logits = []
        for x in inputs:
            outputs = model.predict(x)
            logits.append((outputs["coefficients"][0] @ outputs["prototypes"][0].flatten(1)))
    scale = spreads["mask_logits"] / float(torch.cat([t.flatten() for t in logits]).std())
    _scale_conv(model.mask_branch.protonet.predictor, scale)
