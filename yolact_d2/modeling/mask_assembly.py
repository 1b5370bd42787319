# Copyright (c) yolact_d2 contributors.
"""Mask assembly: linear combination of prototypes and the crop by the box."""

from typing import Tuple

import torch

__all__ = ["assemble_masks", "crop_masks", "box_crop_bounds"]


def assemble_masks(prototypes: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """
    M = sigmoid(P C^T).

    Args:
        prototypes (Tensor): (k, H, W) prototypes of one image.
        coefficients (Tensor): (n, k) mask coefficients of n instances.

    Returns:
        Tensor: (n, H, W) soft masks in (0, 1).
    """
    k, h, w = prototypes.shape
    return torch.sigmoid(coefficients @ prototypes.reshape(k, h * w)).reshape(-1, h, w)


def box_crop_bounds(
    low: torch.Tensor, high: torch.Tensor, size: int, padding: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    The reference's ``sanitize_coordinates`` without integer casting: relative coordinates to
    ``size`` units, ordered, padded and clamped to [0, size].

    Args:
        low, high (Tensor): (n,) relative coordinates (either may be the larger).
        size (int): the axis length to scale to.
        padding (float): added on both sides before clamping.

    Returns:
        (Tensor, Tensor): (n,) lower and upper bounds.
    """
    low, high = low * size, high * size
    lower = torch.minimum(low, high)
    upper = torch.maximum(low, high)
    return (lower - padding).clamp(min=0), (upper + padding).clamp(max=size)


def crop_masks(masks: torch.Tensor, boxes: torch.Tensor, padding: float = 1) -> torch.Tensor:
    """
    Zeroes every pixel outside each instance's box (the reference's ``crop``): pixel column c
    survives iff x1 <= c < x2 with x1 = max(x1_rel * W - padding, 0) and
    x2 = min(x2_rel * W + padding, W), and likewise for rows.

    Args:
        masks (Tensor): (n, H, W).
        boxes (Tensor): (n, 4) relative XYXY boxes.
        padding (float): pixels added around each box.

    Returns:
        Tensor: (n, H, W) cropped masks.
    """
    n, h, w = masks.shape
    x1, x2 = box_crop_bounds(boxes[:, 0], boxes[:, 2], w, padding)
    y1, y2 = box_crop_bounds(boxes[:, 1], boxes[:, 3], h, padding)
    cols = torch.arange(w, device=masks.device, dtype=x1.dtype)[None, :]
    rows = torch.arange(h, device=masks.device, dtype=y1.dtype)[None, :]
    inside_x = ((cols >= x1[:, None]) & (cols < x2[:, None])).to(masks.dtype)  # (n, W)
    inside_y = ((rows >= y1[:, None]) & (rows < y2[:, None])).to(masks.dtype)  # (n, H)
    # Two broadcast products by exact 0/1 factors: the same values as one product by the 2-D
    # indicator, without materialising it.
    return (masks * inside_y[:, :, None]).mul_(inside_x[:, None, :])
