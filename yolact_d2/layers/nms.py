# Copyright (c) yolact_d2 contributors.
"""
Non-maximum suppression in YOLACT's three flavours, plus torchvision's for comparison.

* :func:`fast_nms` - per-class Fast NMS (the paper's contribution), registered as the PyTorch
  custom operator ``torch.ops.yolact_d2.fast_nms`` so it can be traced, exported and run on any
  device.
* :func:`cross_class_fast_nms` - the class-agnostic variant.
* :func:`traditional_nms` - per-class greedy NMS with the reference's conventions.
* :func:`batched_nms` - torchvision's per-class greedy NMS on Fast NMS's candidates.

All of them take the candidates of one image after the reference's score pre-filter.
"""

import functools
from typing import Callable, Tuple

import torch
import torchvision

from .box_ops import box_iou

__all__ = [
    "fast_nms",
    "fast_nms_traceable",
    "cross_class_fast_nms",
    "traditional_nms",
    "batched_nms",
    "NMS_FUNCTIONS",
    "build_nms",
    "sorted_top_k",
    "stable_top_k_traceable",
    "max_iou_with_higher_scored",
]

_Result = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]

# Classes whose IoU matrices max_iou_with_higher_scored computes together: 8 classes of 200
# boxes make 1.3 MB temporaries, which stay in a core's L2 cache.
_IOU_CLASS_CHUNK = 8


def sorted_top_k(scores: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Exactly ``scores.sort(dim=1, descending=True, stable=True)`` truncated to ``k`` columns
    (the ``k`` best scores of each row, equal scores in ascending column order), but with a
    partial selection (``topk``) instead of sorting whole rows: ~10x cheaper for the 200 best
    of 19248 priors. Rows holding NaN are sorted in full.

    Args:
        scores (Tensor): (C, N).
        k (int): columns to keep.

    Returns:
        (Tensor, Tensor): (C, min(k, N)) sorted scores and their column indices.
    """
    k = min(k, scores.shape[1])
    if not 0 < k < scores.shape[1]:
        return _stable_sort_top_k(scores, k)
    values, indices = scores.topk(k, dim=1)
    if values.isnan().any():  # topk ranks NaN first, as sort does, but ">=" below cannot
        return _stable_sort_top_k(scores, k)
    # topk's order of equal scores is arbitrary: ascending index first, then a stable sort.
    indices, order = indices.sort(dim=1)
    values, order = values.gather(1, order).sort(dim=1, descending=True, stable=True)
    indices = indices.gather(1, order)
    # Where more scores equal a row's k-th best than fit, topk chose among them arbitrarily.
    num_at_least_kth = (scores >= values[:, -1:]).sum(dim=1)
    for row in (num_at_least_kth > k).nonzero().flatten().tolist():
        values[row], indices[row] = _stable_top_k_of_row(scores[row], values[row, -1], k)
    return values, indices


def stable_top_k_traceable(scores: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    :func:`sorted_top_k` without a branch on the data, for exporters: the ``k`` best scores of
    each row, equal scores in ascending column order, from two partial selections over the row
    and a sort of ``k`` values instead of sorting whole rows (which ONNX runtimes do slowly:
    two full-row TopK nodes took 141 ms of an R50-550 image on OpenVINO).

    Each row's k-th best value ``t`` splits the row: all scores above ``t`` are in, and of those
    equal to ``t`` the first ones by column fill the rest (a running count over the row). The
    chosen columns, found by a top-k of a key that is positive only for them and larger for
    lower columns, come out in ascending column order, so a stable sort of their values gives
    the stable sort's order. NaN counts as ``-inf`` (never ranked first).

    Args:
        scores (Tensor): (C, N) with N >= k.
        k (int): columns to keep, at least 1.

    Returns:
        (Tensor, Tensor): (C, k) sorted scores and their column indices.
    """
    scores = torch.where(scores.isnan(), -float("inf"), scores)
    kth = scores.topk(k, dim=1).values[:, -1:]  # (C, 1)
    above = scores > kth
    ties = scores == kth
    needed = k - above.sum(dim=1, keepdim=True)
    chosen = above | (ties & (ties.cumsum(dim=1) <= needed))  # exactly k per row
    columns = torch.arange(scores.shape[1], device=scores.device)
    key = torch.where(chosen, scores.shape[1] - columns, torch.zeros_like(columns))
    indices = key.topk(k, dim=1).indices  # the chosen columns, ascending
    values, order = scores.gather(1, indices).sort(dim=1, descending=True, stable=True)
    return values, indices.gather(1, order)


def _stable_sort_top_k(scores: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    values, indices = scores.sort(dim=1, descending=True, stable=True)
    return values[:, :k], indices[:, :k]


def _stable_top_k_of_row(row: torch.Tensor, kth: torch.Tensor, k: int):
    """The k best of ``row`` (N,) whose k-th best value is ``kth``, ties by ascending index."""
    selected = (row >= kth).nonzero().flatten()
    values, order = row[selected].sort(descending=True, stable=True)
    return values[:k], selected[order[:k]]


def max_iou_with_higher_scored(boxes: torch.Tensor) -> torch.Tensor:
    """
    For every box, its largest IoU with an earlier (higher-scored) box of the same class:
    exactly ``box_iou(boxes, boxes).triu_(diagonal=1).max(dim=1).values``, with the same
    floating-point operations per pair, but on separate coordinates, with in-place temporaries
    and a few classes at a time so that the temporaries stay in cache (~5x faster on CPU).

    Args:
        boxes (Tensor): (C, n, 4) XYXY boxes of each class, best first.

    Returns:
        Tensor: (C, n), 0 for the first box of every class.
    """
    return torch.cat([_max_iou_chunk(chunk) for chunk in boxes.split(_IOU_CLASS_CHUNK)])


def _max_iou_chunk(boxes: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = (coord.contiguous() for coord in boxes.unbind(dim=-1))  # (c, n) each
    area = (x2 - x1) * (y2 - y1)
    inter = _overlap(x1, x2).mul_(_overlap(y1, y2))
    union = (area[:, :, None] + area[:, None, :]).sub_(inter)
    # IoU is exactly symmetric, so the max over earlier rows of a column (triu, dim 1) equals
    # the max over earlier columns of the row (tril, dim 2), a reduction along memory.
    return inter.div_(union).tril_(diagonal=-1).max(dim=2).values


def _overlap(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """(c, n) interval bounds -> (c, n, n) clamped pairwise overlap lengths."""
    upper = torch.minimum(high[:, :, None], high[:, None, :])
    return upper.sub_(torch.maximum(low[:, :, None], low[:, None, :])).clamp_(min=0)


def fast_nms_implementation(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float,
    top_k: int,
    max_num_detections: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    The computation of ``torch.ops.yolact_d2.fast_nms`` (on any device); call :func:`fast_nms`.
    """
    num_classes, num_candidates = scores.shape
    empty = scores.new_zeros((0,))
    if num_candidates == 0 or num_classes == 0:
        idx = torch.zeros((0,), dtype=torch.int64, device=scores.device)
        return empty, idx, idx.clone()
    # Top-k candidates of every class, highest score first.
    scores, order = sorted_top_k(scores, top_k)
    class_boxes = boxes[order]  # (C, n, 4)
    # Column max: for each box, its largest IoU with any higher-scored box of the same class,
    # whether or not that box is itself suppressed (this is what makes it "fast").
    keep = max_iou_with_higher_scored(class_boxes) <= iou_threshold
    return _rank_kept(scores, order, keep, max_num_detections)


_fast_nms_op = torch.library.custom_op("yolact_d2::fast_nms", mutates_args=())(
    fast_nms_implementation
)


def _rank_kept(
    scores: torch.Tensor, order: torch.Tensor, keep: torch.Tensor, max_num_detections: int
) -> _Result:
    """
    The survivors of all classes, best first: (C, k) per-class sorted scores, their candidate
    indices and keep mask -> the ``max_num_detections`` best (scores, classes, indices).
    """
    classes = torch.arange(scores.shape[0], device=scores.device)[:, None].expand_as(keep)
    kept_scores, kept_classes, kept_order = scores[keep], classes[keep], order[keep]
    kept_scores, rank = kept_scores.sort(dim=0, descending=True)
    rank = rank[:max_num_detections]
    return kept_scores[:max_num_detections].contiguous(), kept_classes[rank], kept_order[rank]


@_fast_nms_op.register_fake
def _(boxes, scores, iou_threshold, top_k, max_num_detections):
    num = torch.library.get_ctx().new_dynamic_size()
    return (
        scores.new_empty((num,)),
        scores.new_empty((num,), dtype=torch.int64),
        scores.new_empty((num,), dtype=torch.int64),
    )


def fast_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_num_detections: int = 100,
) -> _Result:
    """
    Per-class Fast NMS (Bolya et al., 2019, Sec. 3.3), exactly as the reference's evaluation.

    Each class keeps its ``top_k`` highest-scoring candidates (equal scores ordered by
    candidate index); one batched IoU matrix per class is reduced to its upper triangle and a
    box is kept iff its largest IoU with any higher-ranked box of its class is
    ``<= iou_threshold``. Survivors of all classes are sorted by score and the
    best ``max_num_detections`` returned. No second score threshold is applied.

    Args:
        boxes (Tensor): (N, 4) XYXY candidate boxes (any units; IoU is scale-free).
        scores (Tensor): (C, N) class scores of the candidates, background excluded.
        iou_threshold (float): suppression threshold.
        top_k (int): candidates per class entering NMS.
        max_num_detections (int): detections returned at most.

    Returns:
        (scores, classes, indices): (D,) float scores sorted descending, (D,) int64 classes in
        [0, C), (D,) int64 indices into the N candidates.
    """
    return torch.ops.yolact_d2.fast_nms(
        boxes, scores, float(iou_threshold), int(top_k), int(max_num_detections)
    )


def fast_nms_traceable(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_num_detections: int = 100,
) -> _Result:
    """
    :func:`fast_nms` written only with operations that ``torch.export`` (and from it ONNX) can
    trace for any number of candidates: no branch on the data and no shape that depends on it
    (until the kept boxes are gathered), the per-class top-k by :func:`stable_top_k_traceable`,
    and "kept" as "no IoU above the threshold with a higher-scored box of its class" (an ``all``
    over the IoU row, defined for the first box, where the reference's column ``max`` needs a
    special case). Same results as
    :func:`fast_nms` (tested) for finite scores (a NaN score, which :func:`fast_nms` ranks
    first, is never kept here); it is the form for exporters, not the fastest on CPU.

    Args and returns: as :func:`fast_nms`.
    """
    num_classes = scores.shape[0]
    # top_k padding candidates (score -inf, empty box) make every class's top-k exactly top_k
    # long whatever the number of candidates, so that no shape depends on it; they rank after
    # every real candidate and are never kept.
    padded_scores = torch.cat([scores, scores.new_full((num_classes, top_k), -float("inf"))], 1)
    padded_boxes = torch.cat([boxes, boxes.new_zeros((top_k, 4))])
    values, order = stable_top_k_traceable(padded_scores, top_k)
    class_boxes = padded_boxes[order]  # (C, top_k, 4)
    # Row i holds the IoU of box i with the boxes ranked before it (tril): the same pairs and
    # operations as max_iou_with_higher_scored.
    iou = box_iou(class_boxes, class_boxes).tril(diagonal=-1)
    keep = (iou <= iou_threshold).all(dim=2) & (values > -float("inf"))
    return _rank_kept(values, order, keep, max_num_detections)


def cross_class_fast_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_num_detections: int = -1,
) -> _Result:
    """
    Class-agnostic Fast NMS (the reference's ``cc_fast_nms``): every candidate takes its best
    class, the ``top_k`` best candidates are suppressed against each other regardless of class.
    The reference applies no per-image cap here; ``max_num_detections < 0`` keeps that.

    Args and returns: as :func:`fast_nms`.
    """
    best_scores, best_classes = scores.max(dim=0)
    order = sorted_top_k(best_scores[None], top_k)[1][0]
    if len(order):
        keep = max_iou_with_higher_scored(boxes[order][None])[0] <= iou_threshold
    else:
        keep = order.new_zeros((0,), dtype=torch.bool)
    kept = order[keep]
    if max_num_detections >= 0:
        kept = kept[:max_num_detections]
    return best_scores[kept], best_classes[kept], kept


def _greedy_nms_plus_one(boxes: torch.Tensor, scores: torch.Tensor, thresh: float) -> torch.Tensor:
    """Greedy NMS with "+1" pixel sizes, suppressing IoU >= thresh (the reference's Cython NMS)."""
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.sort(descending=True).indices
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    order_list = order.tolist()
    for pos, i in enumerate(order_list):
        if suppressed[pos]:
            continue
        keep.append(i)
        rest = order[pos + 1 :]
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + 1).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + 1).clamp(min=0)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        suppressed[pos + 1 :] |= (overlap >= thresh).cpu()
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def traditional_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_num_detections: int = 100,
    score_threshold: float = 0.05,
    input_size: int = 550,
) -> _Result:
    """
    Per-class greedy NMS as the reference's ``traditional_nms``: per class, candidates scoring
    above ``score_threshold`` are suppressed greedily on boxes scaled to ``input_size`` pixels
    (widths computed with "+1"), then all survivors are sorted and capped. ``top_k`` is unused,
    as in the reference.

    Args and returns: as :func:`fast_nms`; ``boxes`` must be relative (0..1) coordinates.
    """
    del top_k
    pixel_boxes = boxes * input_size
    kept_scores, kept_classes, kept_idx = [], [], []
    for c in range(scores.shape[0]):
        candidates = torch.nonzero(scores[c] > score_threshold).flatten()
        if len(candidates) == 0:
            continue
        keep = candidates[
            _greedy_nms_plus_one(pixel_boxes[candidates], scores[c, candidates], iou_threshold)
        ]
        kept_idx.append(keep)
        kept_scores.append(scores[c, keep])
        kept_classes.append(torch.full_like(keep, c))
    if not kept_idx:
        empty = torch.zeros((0,), dtype=torch.int64, device=scores.device)
        return scores.new_zeros((0,)), empty, empty.clone()
    all_scores, rank = torch.cat(kept_scores).sort(descending=True)
    rank = rank[:max_num_detections]
    return all_scores[:max_num_detections], torch.cat(kept_classes)[rank], torch.cat(kept_idx)[rank]


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_num_detections: int = 100,
) -> _Result:
    """
    Per-class greedy NMS by torchvision's ``batched_nms`` on the same per-class candidates as
    :func:`fast_nms` (each class's ``top_k`` best, no second score threshold). A box is
    suppressed only by kept boxes (IoU > ``iou_threshold``), so before the per-image cap it
    keeps a superset of what Fast NMS keeps.

    Args and returns: as :func:`fast_nms`.
    """
    num_classes, num_candidates = scores.shape
    if num_candidates == 0 or num_classes == 0:
        idx = torch.zeros((0,), dtype=torch.int64, device=scores.device)
        return scores.new_zeros((0,)), idx, idx.clone()
    top_scores, order = sorted_top_k(scores, top_k)
    classes = torch.arange(num_classes, device=scores.device)[:, None].expand_as(order)
    order, classes, top_scores = order.flatten(), classes.flatten(), top_scores.flatten()
    keep = torchvision.ops.batched_nms(boxes[order], top_scores, classes, iou_threshold)
    keep = keep[:max_num_detections]  # sorted by decreasing score
    return top_scores[keep], classes[keep], order[keep]


NMS_FUNCTIONS = {
    "fast": fast_nms,
    "cross_class": cross_class_fast_nms,
    "traditional": traditional_nms,
    "batched": batched_nms,
}


def build_nms(
    nms_type: str,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_num_detections: int = 100,
    score_threshold: float = 0.05,
    input_size: int = 550,
) -> Callable[[torch.Tensor, torch.Tensor], _Result]:
    """
    One of :data:`NMS_FUNCTIONS` with YOLACT's settings bound, as the model calls it:
    ``nms(boxes (n, 4), scores (C, n)) -> (scores, classes, indices)``. Traditional NMS also
    gets the score threshold and input size; cross-class NMS keeps no per-image cap, as the
    reference.

    Args:
        nms_type (str): a key of :data:`NMS_FUNCTIONS`.
        iou_threshold, top_k, max_num_detections, score_threshold, input_size: see
            ``MODEL.YOLACT.TEST`` and ``MODEL.YOLACT.INPUT_SIZE``.
    """
    if nms_type not in NMS_FUNCTIONS:
        raise ValueError(f"NMS type must be one of {sorted(NMS_FUNCTIONS)}, got {nms_type!r}")
    kwargs = {
        "iou_threshold": iou_threshold,
        "top_k": top_k,
        "max_num_detections": max_num_detections,
    }
    if nms_type == "traditional":
        kwargs.update(score_threshold=score_threshold, input_size=input_size)
    elif nms_type == "cross_class":
        kwargs["max_num_detections"] = -1
    return functools.partial(NMS_FUNCTIONS[nms_type], **kwargs)
