# Copyright (c) yolact_d2 contributors.
"""
Agreement of two predictions of the same image, e.g. the fast CPU path against fp32: detections
are matched by class and box IoU, and the masks of matched pairs compared by IoU.
"""

import numpy as np
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch

from detectron2.structures import Instances, pairwise_iou

__all__ = ["match_detections", "mask_ious", "MaskAgreement"]


def match_detections(
    reference: Instances,
    other: Instances,
    box_iou_threshold: float = 0.5,
    score_tolerance: Optional[float] = None,
    box_tolerance: Optional[float] = None,
) -> List[Tuple[int, int]]:
    """
    Greedy one-to-one matching, reference detections in decreasing score order: each takes the
    unmatched detection of ``other`` with the same class and the highest box IoU, if that IoU is
    at least ``box_iou_threshold`` (and, when given, the scores differ by at most
    ``score_tolerance`` and every box coordinate by at most ``box_tolerance`` pixels: the
    "same detection" of a parity check).

    Returns:
        list[tuple[int, int]]: (reference index, other index) pairs.
    """
    if len(reference) == 0 or len(other) == 0:
        return []
    iou = pairwise_iou(reference.pred_boxes, other.pred_boxes)
    allowed = (reference.pred_classes[:, None] == other.pred_classes[None, :]) & (
        iou >= box_iou_threshold
    )
    if score_tolerance is not None:
        difference = (reference.scores[:, None] - other.scores[None, :]).abs()
        allowed &= difference <= score_tolerance
    if box_tolerance is not None:
        a, b = reference.pred_boxes.tensor, other.pred_boxes.tensor
        allowed &= (a[:, None, :] - b[None, :, :]).abs().amax(dim=2) <= box_tolerance
    iou = torch.where(allowed, iou, torch.full_like(iou, -1.0))
    taken = torch.zeros(len(other), dtype=torch.bool)
    pairs = []
    for i in torch.argsort(reference.scores, descending=True).tolist():
        candidates = iou[i].masked_fill(taken, -1.0)
        j = int(candidates.argmax())
        if candidates[j] >= 0:
            taken[j] = True
            pairs.append((i, j))
    return pairs


def mask_ious(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """
    Args:
        a, b (Tensor): (n, H, W) bool masks, compared pairwise in order.

    Returns:
        Tensor: (n,) IoU; 1 where both masks are empty.
    """
    a, b = a.flatten(1), b.flatten(1)
    inter = (a & b).sum(dim=1).double()
    union = (a | b).sum(dim=1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@dataclass
class MaskAgreement:
    """
    Accumulates matched mask IoUs over images; ``score_tolerance`` and ``box_tolerance`` are
    :func:`match_detections`' (None: matched by class and box IoU only).
    """

    score_tolerance: Optional[float] = None
    box_tolerance: Optional[float] = None
    ious: List[float] = field(default_factory=list)
    num_reference: int = 0
    num_other: int = 0

    def add(self, reference: Instances, other: Instances) -> None:
        """Matches the detections of one image and records the mask IoU of every pair."""
        reference, other = reference.to("cpu"), other.to("cpu")
        pairs = match_detections(
            reference,
            other,
            score_tolerance=self.score_tolerance,
            box_tolerance=self.box_tolerance,
        )
        self.num_reference += len(reference)
        self.num_other += len(other)
        if pairs:
            ref_idx, other_idx = (list(t) for t in zip(*pairs))
            ious = mask_ious(reference.pred_masks[ref_idx], other.pred_masks[other_idx])
            self.ious.extend(ious.tolist())

    @property
    def mean_iou(self) -> float:
        """Mean mask IoU of the matched pairs (NaN if none)."""
        return float(np.mean(self.ious)) if self.ious else float("nan")

    @property
    def matched_fraction(self) -> float:
        """Matched pairs over reference detections (NaN if there are none)."""
        return len(self.ious) / self.num_reference if self.num_reference else float("nan")

    @property
    def one_to_one_fraction(self) -> float:
        """Matched pairs over the detections of the side that has more (NaN if none)."""
        most = max(self.num_reference, self.num_other)
        return len(self.ious) / most if most else float("nan")
