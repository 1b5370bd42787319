# Copyright (c) yolact_d2 contributors.
"""
Box utilities in YOLACT's conventions (relative coordinates, no "+1" in sizes). The 2-D cases
are torchvision's ops, which compute exactly what the reference's ``jaccard`` and
``point_form`` compute (same operations in the same order: bit-identical, tested); the batched
IoU that Fast NMS needs, and the intersection over the first box, are written here.
"""

import torch
from torchvision.ops import box_convert
from torchvision.ops import box_iou as _box_iou_2d

__all__ = ["box_iou", "center_size_to_corners", "intersection_over_first"]


def center_size_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    """
    Args:
        boxes (Tensor): (..., 4) boxes as (cx, cy, w, h).

    Returns:
        Tensor: (..., 4) the same boxes as (x1, y1, x2, y2).
    """
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def _intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    top_left = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    bottom_right = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """
    Pairwise IoU, optionally batched (the reference's ``jaccard``).

    Args:
        a (Tensor): (..., N, 4) XYXY boxes.
        b (Tensor): (..., M, 4) XYXY boxes, same leading dims as ``a``.

    Returns:
        Tensor: (..., N, M) IoU.
    """
    if a.dim() == 2 and b.dim() == 2:
        return _box_iou_2d(a, b)
    inter = _intersection(a, b)
    union = _area(a)[..., :, None] + _area(b)[..., None, :] - inter
    return inter / union


def intersection_over_first(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """
    Intersection divided by the area of the boxes in ``a`` (used to find priors inside crowds).

    Args:
        a (Tensor): (N, 4) XYXY boxes.
        b (Tensor): (M, 4) XYXY boxes.

    Returns:
        Tensor: (N, M).
    """
    return _intersection(a, b) / _area(a)[:, None]
