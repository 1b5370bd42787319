# Copyright (c) yolact_d2 contributors.
"""
Random weights that detect like a trained model. A randomly initialised YOLACT gives saturated,
tied scores (every prior passes the score pre-filter with the same confidence), so its
detections say nothing about speed with a real workload or about numerical agreement between
two implementations. :func:`calibrate_detections` fixes that without training: BatchNorm
statistics from real images, then the last layers rescaled (exact linear changes) so that
scores, boxes and masks have a trained model's spread. The tests use it for parity checks, the
benchmark (``--calibrate``) for its random-weight rows.
"""

import math
import numpy as np

import torch

from yolact_d2.modeling.mask_assembly import crop_masks

__all__ = ["DETECTION_SPREADS", "BOX_GROWTH", "calibrate_batch_norm", "calibrate_detections"]


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
    # Nearly dead channels (variance ~0) would divide rounding errors by ~sqrt(eps): no
    # channel's variance is taken below its layer's median, as in a well-conditioned net.
    for norm in model.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.running_var.clamp_(min=float(norm.running_var.median()))
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
            with torch.no_grad():  # centred per channel
                conv.bias.sub_(outputs.mean(dim=1))
            outputs = outputs - outputs.mean(dim=1, keepdim=True)
        _scale_conv(conv, spreads[name] / float(outputs.std()))
        if name == "bbox_pred":
            with torch.no_grad():  # channels (dx, dy, dw, dh) per anchor
                conv.bias.view(-1, 4)[:, 2:] += math.log(BOX_GROWTH) / model.box_variances[1]
    # The mask logits P C^T of the detections, inside their boxes, centred on 0 (P >= 0, so a
    # common shift of the coefficients' pre-tanh values moves them monotonically: bisect it; the
    # detections themselves do not depend on the coefficients), then scaled.
    with torch.no_grad():
        samples = []
        for x in inputs:
            out = model.predict(x)
            detections = model.postprocess(out, [out["input_size"]], until="detections")[0]
            boxes = detections["boxes"]
            coefficients = out["coefficients"][0][detections["indices"]]
            coefficients = coefficients.clamp(-1 + 1e-6, 1 - 1e-6)
            prototypes = out["prototypes"][0]
            inside = crop_masks(prototypes.new_ones((len(boxes), *prototypes.shape[1:])), boxes) > 0
            samples.append((torch.atanh(coefficients), prototypes.flatten(1), inside.flatten(1)))

        def logits(shift):
            return torch.cat([(torch.tanh(c + shift) @ p)[m] for c, p, m in samples])

        low, high = -3.0, 3.0
        for _ in range(30):
            middle = (low + high) / 2
            low, high = (middle, high) if logits(middle).mean() < 0 else (low, middle)
        head.coefficients.bias.add_((low + high) / 2)
        scale = spreads["mask_logits"] / float(logits((low + high) / 2).std())
    _scale_conv(model.mask_branch.protonet.predictor, scale)
