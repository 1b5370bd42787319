# Copyright (c) yolact_d2 contributors.
"""Assignment of ground truth to priors (the reference's ``match``)."""

from typing import Tuple

import torch

from yolact_d2.layers import box_iou, center_size_to_corners, intersection_over_first

__all__ = ["match_priors"]


def match_priors(
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    crowd_boxes: torch.Tensor,
    priors: torch.Tensor,
    pos_threshold: float = 0.5,
    neg_threshold: float = 0.4,
    crowd_threshold: float = 0.7,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Matches the priors of one image to its ground truth by the IoU of the *prior* boxes.

    Every prior takes its best-overlapping ground truth; then, once per ground truth, the
    globally best remaining (ground truth, prior) pair is forced together, so that each ground
    truth has at least one prior. Priors with IoU >= ``pos_threshold`` are positive, <
    ``neg_threshold`` background, others ignored. Non-positive priors covered by a crowd box for
    more than ``crowd_threshold`` of their own area are ignored too.

    Args:
        gt_boxes (Tensor): (G, 4) relative XYXY non-crowd boxes.
        gt_classes (Tensor): (G,) int64 classes in [0, C).
        crowd_boxes (Tensor): (M, 4) relative XYXY crowd boxes (M may be 0).
        priors (Tensor): (R, 4) relative (cx, cy, w, h).
        pos_threshold, neg_threshold, crowd_threshold (float): see above.

    Returns:
        labels (Tensor): (R,) int64: class + 1 for positives, 0 background, -1 ignored.
        matched_idx (Tensor): (R,) int64 index of the ground truth each prior is matched to
            (meaningful for positives; 0 when there is no ground truth).
    """
    num_priors = priors.shape[0]
    prior_boxes = center_size_to_corners(priors)
    labels = torch.zeros(num_priors, dtype=torch.int64, device=priors.device)
    matched_idx = torch.zeros(num_priors, dtype=torch.int64, device=priors.device)
    if gt_boxes.shape[0] > 0:
        overlaps = box_iou(gt_boxes, prior_boxes)  # (G, R)
        best_overlap, matched_idx = overlaps.max(dim=0)
        for _ in range(gt_boxes.shape[0]):
            best_prior_overlap, best_prior = overlaps.max(dim=1)
            j = best_prior_overlap.argmax()
            i = best_prior[j]
            overlaps[:, i] = -1
            overlaps[j, :] = -1
            best_overlap[i] = 2
            matched_idx[i] = j
        labels = gt_classes[matched_idx] + 1
        labels[best_overlap < pos_threshold] = -1
        labels[best_overlap < neg_threshold] = 0
    if crowd_boxes.shape[0] > 0 and crowd_threshold < 1:
        crowd_overlap = intersection_over_first(prior_boxes, crowd_boxes).max(dim=1).values
        labels[(labels <= 0) & (crowd_overlap > crowd_threshold)] = -1
    return labels, matched_idx
