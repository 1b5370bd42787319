# Copyright (c) yolact_d2 contributors.
"""YOLACT inference: candidate selection, NMS, mask assembly and pasting to the original image."""
from typing import Callable, Dict, Optional, Tuple
import torch

from detectron2.structures import Boxes, Instances

from .mask_assembly import assemble_masks, box_crop_bounds, crop_masks, upsample_masks

__all__ = ["detect", "detections_to_instances"]


def detect(
    class_logits: torch.Tensor,
    boxes: torch.Tensor,
    nms: Callable,
    score_threshold: float,
    **nms_kwargs,
) -> Dict[str, torch.Tensor]:
    """
    The reference's ``Detect`` for one image: softmax over C + 1 classes, keep the priors whose
    best foreground score is above ``score_threshold`` (with all their class scores), then NMS.

    Args:
        class_logits (Tensor): (R, C + 1) logits, background first.
        boxes (Tensor): (R, 4) decoded relative XYXY boxes.
        nms (callable): one of :data:`yolact_d2.layers.NMS_FUNCTIONS`.
        score_threshold (float): the pre-filter (strict ``>``).
        nms_kwargs: forwarded to ``nms``.

    Returns:
        dict: "scores" (D,), "classes" (D,) in [0, C), "indices" (D,) into the R priors.
    """
    scores = torch.softmax(class_logits.float(), dim=-1)[:, 1:].t()  # (C, R)
    candidates = torch.nonzero(scores.max(dim=0).values > score_threshold).flatten()
    kept_scores, classes, order = nms(boxes[candidates].float(), scores[:, candidates], **nms_kwargs)
    return {"scores": kept_scores, "classes": classes, "indices": candidates[order]}


def _pixel_boxes(boxes: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
    """Relative XYXY -> integer pixel boxes, as the reference (scale, order, clamp, truncate)."""
    height, width = image_size
    x1, x2 = box_crop_bounds(boxes[:, 0], boxes[:, 2], width, 0)
    y1, y2 = box_crop_bounds(boxes[:, 1], boxes[:, 3], height, 0)
    return torch.stack([x1, y1, x2, y2], dim=1).long()


def detections_to_instances(
    detections: Dict[str, torch.Tensor],
    boxes: torch.Tensor,
    coefficients: torch.Tensor,
    prototypes: torch.Tensor,
    image_size: Tuple[int, int],
    mask_threshold: float = 0.5,
    crop: bool = True,
    maskiou_net: Optional[torch.nn.Module] = None,
    rescore_mask: bool = True,
    rescore_box: bool = False,
) -> Instances:
    """
    Turns the detections of one image into Detectron2 ``Instances`` at the original image size.

    Masks are assembled at prototype resolution, cropped by the predicted box there (1 px pad),
    stretched to ``image_size`` and thresholded. Boxes become integer pixel coordinates and
    detections whose box has zero area are dropped, as the reference's COCO output does.

    Args:
        detections (dict): output of :func:`detect`.
        boxes (Tensor): (R, 4) relative XYXY boxes of all priors.
        coefficients (Tensor): (R, k) mask coefficients of all priors.
        prototypes (Tensor): (k, h, w) prototypes of the image.
        image_size (tuple[int, int]): (H, W) of the original image.
        mask_threshold (float): binarisation threshold.
        crop (bool): crop masks by their boxes.
        maskiou_net (nn.Module or None): YOLACT++ re-scoring network.
        rescore_mask, rescore_box (bool): which scores the predicted mask IoU multiplies.

    Returns:
        Instances: ``pred_boxes`` (Boxes), ``scores``, ``pred_classes``, ``pred_masks``
        (D, H, W) bool, and for YOLACT++ ``mask_scores``.
    """
    idx = detections["indices"]
    rel_boxes = boxes[idx].float()
    scores, classes = detections["scores"], detections["classes"]
    masks = assemble_masks(prototypes.float(), coefficients[idx].float())
    if crop:
        masks = crop_masks(masks, rel_boxes)
    mask_scores = scores
    if maskiou_net is not None:
        predicted_iou = maskiou_net(masks[:, None]).gather(1, classes[:, None]).squeeze(1)
        if rescore_mask:
            mask_scores = scores * predicted_iou
            if rescore_box:
                scores = mask_scores
    pixel_boxes = _pixel_boxes(rel_boxes, image_size)
    valid = (pixel_boxes[:, 2] > pixel_boxes[:, 0]) & (pixel_boxes[:, 3] > pixel_boxes[:, 1])
    result = Instances(image_size)
    result.pred_boxes = Boxes(pixel_boxes[valid].float())
    result.scores = scores[valid]
    result.pred_classes = classes[valid]
    result.pred_masks = upsample_masks(masks[valid], image_size, mask_threshold)
    if maskiou_net is not None:
        result.mask_scores = mask_scores[valid]
    return result
