# Copyright (c) yolact_d2 contributors.
"""YOLACT inference: candidate selection, NMS, mask assembly and pasting to the original image."""

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from detectron2.structures import Boxes, Instances

from .box_local_masks import BoxLocalMasks
from .mask_assembly import (
    _support_path_is_exact,
    assemble_masks,
    box_crop_bounds,
    crop_masks,
    upsample_masks,
)

__all__ = [
    "PostprocessSettings",
    "detect",
    "select_candidates",
    "suppress",
    "detections_to_instances",
    "assemble_detection_masks",
    "detections_in_pixels",
    "instances_from_detections",
    "paste_detections",
]


@dataclass(frozen=True)
class PostprocessSettings:
    """
    The test-time options of YOLACT's post-processing (``MODEL.YOLACT.TEST`` and
    ``MODEL.YOLACT.MASKIOU``), built once from the config; the defaults reproduce the
    reference's COCO evaluation.

    Attributes:
        nms_type (str): a key of :data:`yolact_d2.layers.NMS_FUNCTIONS`.
        score_threshold (float): the score pre-filter (strict ``>``).
        top_k (int): candidates per class entering NMS.
        nms_threshold (float): IoU threshold of NMS.
        max_detections_per_image (int): detections kept per image.
        mask_threshold (float): binarisation threshold of the up-sampled masks.
        crop_masks (bool): crop masks by their predicted boxes.
        rescore_mask, rescore_box (bool): which scores YOLACT++'s predicted mask IoU multiplies.
        max_dense_mask_bytes (int): above this, ``pred_masks`` is a :class:`BoxLocalMasks`.
    """

    nms_type: str = "fast"
    score_threshold: float = 0.05
    top_k: int = 200
    nms_threshold: float = 0.5
    max_detections_per_image: int = 100
    mask_threshold: float = 0.5
    crop_masks: bool = True
    rescore_mask: bool = True
    rescore_box: bool = False
    max_dense_mask_bytes: int = 2**30

    @classmethod
    def from_config(cls, cfg) -> "PostprocessSettings":
        test, maskiou = cfg.MODEL.YOLACT.TEST, cfg.MODEL.YOLACT.MASKIOU
        return cls(
            nms_type=test.NMS_TYPE,
            score_threshold=test.SCORE_THRESH,
            top_k=test.TOP_K,
            nms_threshold=test.NMS_THRESH,
            max_detections_per_image=test.DETECTIONS_PER_IMAGE,
            mask_threshold=test.MASK_THRESH,
            crop_masks=test.CROP_MASKS,
            rescore_mask=maskiou.RESCORE_MASK,
            rescore_box=maskiou.RESCORE_BOX,
            max_dense_mask_bytes=test.MAX_DENSE_MASK_BYTES,
        )


def select_candidates(
    class_logits: torch.Tensor, score_threshold: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    The reference's pre-filter: softmax over C + 1 classes, then keep the priors whose best
    foreground score is above ``score_threshold`` (with all their class scores).

    Args:
        class_logits (Tensor): (R, C + 1) logits, background first.
        score_threshold (float): the pre-filter (strict ``>``).

    Returns:
        scores (Tensor): (C, R) foreground scores of all priors.
        candidates (Tensor): (n,) int64 indices of the priors that pass.
    """
    scores = torch.softmax(class_logits.float(), dim=-1)[:, 1:].t()  # (C, R)
    candidates = torch.nonzero(scores.max(dim=0).values > score_threshold).flatten()
    return scores, candidates


def suppress(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    candidates: torch.Tensor,
    nms: Callable,
) -> Dict[str, torch.Tensor]:
    """
    NMS over the candidates of :func:`select_candidates`.

    Args:
        boxes (Tensor): (R, 4) decoded relative XYXY boxes.
        scores (Tensor): (C, R) foreground scores.
        candidates (Tensor): (n,) prior indices.
        nms (callable): ``nms(boxes (n, 4), scores (C, n)) -> (scores, classes, order)``, e.g.
            :func:`yolact_d2.layers.build_nms` of the configured settings.

    Returns:
        dict: "scores" (D,), "classes" (D,) in [0, C), "indices" (D,) into the R priors.
    """
    candidate_scores = _gather_columns(scores, candidates)
    kept_scores, classes, order = nms(boxes[candidates].float(), candidate_scores)
    return {"scores": kept_scores, "classes": classes, "indices": candidates[order]}


def _gather_columns(scores: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """
    ``scores[:, columns]`` as a contiguous tensor. The scores of :func:`select_candidates` are a
    transposed view of the softmax output, so gathering its rows (contiguous in memory) and
    transposing is ~4x faster than gathering strided columns; the values are the same.
    """
    if scores.dim() == 2 and scores.stride(0) == 1 and scores.stride(1) != 1:
        return scores.t()[columns].t().contiguous()
    return scores[:, columns]


def detect(
    class_logits: torch.Tensor,
    boxes: torch.Tensor,
    nms: Callable,
    score_threshold: float,
) -> Dict[str, torch.Tensor]:
    """
    The reference's ``Detect`` for one image: :func:`select_candidates`, then :func:`suppress`.

    Args:
        class_logits (Tensor): (R, C + 1) logits, background first.
        boxes (Tensor): (R, 4) decoded relative XYXY boxes.
        nms (callable): see :func:`suppress`.
        score_threshold (float): the pre-filter (strict ``>``).

    Returns:
        dict: "scores" (D,), "classes" (D,) in [0, C), "indices" (D,) into the R priors.
    """
    scores, candidates = select_candidates(class_logits, score_threshold)
    return suppress(boxes, scores, candidates, nms)


def _pixel_boxes(boxes: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
    """Relative XYXY -> integer pixel boxes, as the reference (scale, order, clamp, truncate)."""
    height, width = image_size
    x1, x2 = box_crop_bounds(boxes[:, 0], boxes[:, 2], width, 0)
    y1, y2 = box_crop_bounds(boxes[:, 1], boxes[:, 3], height, 0)
    return torch.stack([x1, y1, x2, y2], dim=1).long()


def assemble_detection_masks(
    detections: Dict[str, torch.Tensor],
    boxes: torch.Tensor,
    coefficients: torch.Tensor,
    prototypes: torch.Tensor,
    settings: PostprocessSettings = PostprocessSettings(),
    maskiou_net: Optional[torch.nn.Module] = None,
) -> Dict[str, torch.Tensor]:
    """
    Masks of the detections at prototype resolution: assembled, cropped by the predicted box
    there (1 px pad) and, for YOLACT++, re-scored.

    Args:
        detections (dict): output of :func:`detect`.
        boxes (Tensor): (R, 4) relative XYXY boxes of all priors.
        coefficients (Tensor): (R, k) mask coefficients of all priors.
        prototypes (Tensor): (k, h, w) prototypes of the image.
        settings (PostprocessSettings): ``crop_masks``, ``rescore_mask``, ``rescore_box``.
        maskiou_net (nn.Module or None): YOLACT++ re-scoring network.

    Returns:
        dict: "masks" (D, h, w) soft masks, "boxes" (D, 4) relative XYXY, "scores" (D,),
        "classes" (D,), and "mask_scores" (D,) for YOLACT++.
    """
    idx = detections["indices"]
    rel_boxes = boxes[idx].float()
    scores, classes = detections["scores"], detections["classes"]
    masks = assemble_masks(prototypes.float(), coefficients[idx].float())
    if settings.crop_masks:
        masks = crop_masks(masks, rel_boxes)
    result = {"masks": masks, "boxes": rel_boxes, "scores": scores, "classes": classes}
    if maskiou_net is not None:
        predicted_iou = maskiou_net(masks[:, None]).gather(1, classes[:, None]).squeeze(1)
        result["mask_scores"] = scores
        if settings.rescore_mask:
            result["mask_scores"] = scores * predicted_iou
            if settings.rescore_box:
                result["scores"] = result["mask_scores"]
    return result


def detections_in_pixels(
    assembled: Dict[str, torch.Tensor], image_size: Tuple[int, int]
) -> Dict[str, torch.Tensor]:
    """
    The detections in the original image's pixels: boxes as integer pixel coordinates (scaled,
    ordered, clamped and truncated as the reference), and the detections whose box has zero
    area dropped, as the reference's COCO output does. Masks stay at prototype resolution.

    Args:
        assembled (dict): output of :func:`assemble_detection_masks`.
        image_size (tuple[int, int]): (H, W) of the original image.

    Returns:
        dict: "boxes" (D', 4) int64 pixel XYXY, "scores" (D',), "classes" (D',), "masks"
        (D', h, w) soft masks, and "mask_scores" (D',) for YOLACT++.
    """
    pixel_boxes = _pixel_boxes(assembled["boxes"], image_size)
    valid = (pixel_boxes[:, 2] > pixel_boxes[:, 0]) & (pixel_boxes[:, 3] > pixel_boxes[:, 1])
    result = {"boxes": pixel_boxes[valid]}
    for key in ("scores", "classes", "masks", "mask_scores"):
        if key in assembled:
            result[key] = assembled[key][valid]
    return result


def instances_from_detections(
    detections: Dict[str, torch.Tensor],
    image_size: Tuple[int, int],
    mask_threshold: float = 0.5,
    max_dense_mask_bytes: int = 2**30,
) -> Instances:
    """
    The paste step: Detectron2 ``Instances`` of :func:`detections_in_pixels`' output, with the
    masks stretched to ``image_size`` and thresholded (:func:`upsample_masks`).

    Args:
        detections (dict): output of :func:`detections_in_pixels`.
        image_size (tuple[int, int]): (H, W) of the original image.
        mask_threshold (float): binarisation threshold.
        max_dense_mask_bytes (int): when (D, H, W) bool masks would be larger and the exact
            CPU paste applies, ``pred_masks`` is a :class:`BoxLocalMasks` of the same masks.

    Returns:
        Instances: ``pred_boxes`` (Boxes), ``scores``, ``pred_classes``, ``pred_masks``
        (D, H, W) bool (or :class:`BoxLocalMasks`), and for YOLACT++ ``mask_scores``.
    """
    result = Instances(image_size)
    result.pred_boxes = Boxes(detections["boxes"].float())
    result.scores = detections["scores"]
    result.pred_classes = detections["classes"]
    masks = detections["masks"]
    dense_bytes = masks.shape[0] * image_size[0] * image_size[1]
    if dense_bytes > max_dense_mask_bytes and _support_path_is_exact(
        masks, image_size, mask_threshold
    ):
        result.pred_masks = BoxLocalMasks.from_soft_masks(masks, image_size, mask_threshold)
    else:
        result.pred_masks = upsample_masks(masks, image_size, mask_threshold)
    if "mask_scores" in detections:
        result.mask_scores = detections["mask_scores"]
    return result


def paste_detections(
    assembled: Dict[str, torch.Tensor],
    image_size: Tuple[int, int],
    mask_threshold: float = 0.5,
    max_dense_mask_bytes: int = 2**30,
) -> Instances:
    """
    Detectron2 ``Instances`` at the original image size: :func:`detections_in_pixels`, then
    :func:`instances_from_detections`.

    Args:
        assembled (dict): output of :func:`assemble_detection_masks`.
        image_size (tuple[int, int]): (H, W) of the original image.
        mask_threshold (float): binarisation threshold.
        max_dense_mask_bytes (int): see :func:`instances_from_detections`.

    Returns:
        Instances: see :func:`instances_from_detections`.
    """
    detections = detections_in_pixels(assembled, image_size)
    return instances_from_detections(detections, image_size, mask_threshold, max_dense_mask_bytes)


def detections_to_instances(
    detections: Dict[str, torch.Tensor],
    boxes: torch.Tensor,
    coefficients: torch.Tensor,
    prototypes: torch.Tensor,
    image_size: Tuple[int, int],
    settings: PostprocessSettings = PostprocessSettings(),
    maskiou_net: Optional[torch.nn.Module] = None,
) -> Instances:
    """
    Turns the detections of one image into Detectron2 ``Instances`` at the original image size:
    :func:`assemble_detection_masks`, then :func:`paste_detections`.

    Args:
        detections (dict): output of :func:`detect`.
        boxes (Tensor): (R, 4) relative XYXY boxes of all priors.
        coefficients (Tensor): (R, k) mask coefficients of all priors.
        prototypes (Tensor): (k, h, w) prototypes of the image.
        image_size (tuple[int, int]): (H, W) of the original image.
        settings (PostprocessSettings): the test-time options.
        maskiou_net (nn.Module or None): YOLACT++ re-scoring network.

    Returns:
        Instances: ``pred_boxes`` (Boxes), ``scores``, ``pred_classes``, ``pred_masks``
        (D, H, W) bool, and for YOLACT++ ``mask_scores``.
    """
    assembled = assemble_detection_masks(
        detections, boxes, coefficients, prototypes, settings, maskiou_net
    )
    return paste_detections(assembled, image_size, settings.mask_threshold)
