# Copyright (c) yolact_d2 contributors.
"""SSD box coding with variances, in relative coordinates and without clamping (the reference's)."""

from typing import Sequence

import torch

__all__ = ["decode_boxes", "encode_boxes"]


def decode_boxes(
    deltas: torch.Tensor, priors: torch.Tensor, variances: Sequence[float] = (0.1, 0.2)
) -> torch.Tensor:
    """
    Args:
        deltas (Tensor): (..., R, 4) predicted (dx, dy, dw, dh).
        priors (Tensor): (R, 4) relative (cx, cy, w, h).
        variances (tuple[float, float]): centre and size variances.

    Returns:
        Tensor: (..., R, 4) relative XYXY boxes. ``exp`` is not clamped, exactly as the reference.
    """
    centers = priors[:, :2] + deltas[..., :2] * variances[0] * priors[:, 2:]
    sizes = priors[:, 2:] * torch.exp(deltas[..., 2:] * variances[1])
    top_left = centers - sizes / 2
    return torch.cat((top_left, sizes + top_left), dim=-1)


def encode_boxes(
    boxes: torch.Tensor, priors: torch.Tensor, variances: Sequence[float] = (0.1, 0.2)
) -> torch.Tensor:
    """
    Inverse of :func:`decode_boxes`.

    Args:
        boxes (Tensor): (R, 4) relative XYXY target boxes, one per prior.
        priors (Tensor): (R, 4) relative (cx, cy, w, h).
        variances (tuple[float, float]): centre and size variances.

    Returns:
        Tensor: (R, 4) regression targets (dx, dy, dw, dh).
    """
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2 - priors[:, :2]
    centers = centers / (variances[0] * priors[:, 2:])
    sizes = torch.log((boxes[:, 2:] - boxes[:, :2]) / priors[:, 2:]) / variances[1]
    return torch.cat((centers, sizes), dim=1)
