# Copyright (c) yolact_d2 contributors.
"""
The stages of YOLACT's inference before the paste: the score pre-filter, NMS, and the masks of
the detections at prototype resolution. :meth:`~yolact_d2.modeling.Yolact.postprocess` composes
them (with :mod:`~yolact_d2.modeling.paste`); nothing else does.
"""

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from .mask_assembly import assemble_masks, crop_masks

__all__ = ["PostprocessSettings", "select_candidates", "suppress", "assemble_detection_masks"]


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
        output_coefficients (bool): ``Instances`` also carry ``pred_coefficients`` (D, k).
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
    output_coefficients: bool = False

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
            output_coefficients=test.get("OUTPUT_COEFFICIENTS", False),
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
        detections (dict): output of :func:`suppress`.
        boxes (Tensor): (R, 4) relative XYXY boxes of all priors.
        coefficients (Tensor): (R, k) mask coefficients of all priors.
        prototypes (Tensor): (k, h, w) prototypes of the image.
        settings (PostprocessSettings): ``crop_masks``, ``rescore_mask``, ``rescore_box``.
        maskiou_net (nn.Module or None): YOLACT++ re-scoring network.

    Returns:
        dict: "masks" (D, h, w) soft masks, "boxes" (D, 4) relative XYXY, "scores" (D,),
        "classes" (D,), "indices" (D,) into the priors, and "mask_scores" (D,) for YOLACT++.
    """
    idx = detections["indices"]
    rel_boxes = boxes[idx].float()
    scores, classes = detections["scores"], detections["classes"]
    masks = assemble_masks(prototypes.float(), coefficients[idx].float())
    if settings.crop_masks:
        masks = crop_masks(masks, rel_boxes)
    result = {
        "masks": masks,
        "boxes": rel_boxes,
        "scores": scores,
        "classes": classes,
        "indices": idx,
    }
    if maskiou_net is not None:
        predicted_iou = maskiou_net(masks[:, None]).gather(1, classes[:, None]).squeeze(1)
        result["mask_scores"] = scores
        if settings.rescore_mask:
            result["mask_scores"] = scores * predicted_iou
            if settings.rescore_box:
                result["scores"] = result["mask_scores"]
    return result
