# Copyright (c) yolact_d2 contributors.
"""
YOLACT's inference after the network: the score pre-filter, NMS, the masks of the detections at
prototype resolution, and their composition with the paste (:mod:`~yolact_d2.modeling.paste`)
in :func:`postprocess_predictions`, which :meth:`~yolact_d2.modeling.Yolact.postprocess` and the
predictor of exported networks (:class:`~yolact_d2.deploy.ExportedPredictor`) run; nothing else
composes them.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from yolact_d2.layers import build_nms
from yolact_d2.utils.stages import record_count, stage

from .box_coder import decode_boxes
from .mask_assembly import assemble_masks, crop_masks
from .paste import detections_in_content, detections_in_pixels, paste_instances

__all__ = [
    "POSTPROCESS_STAGES",
    "PostprocessSettings",
    "select_candidates",
    "suppress",
    "assemble_detection_masks",
    "postprocess_predictions",
]

# The stages :func:`postprocess_predictions` can stop after, in order.
POSTPROCESS_STAGES = ("detections", "masks", "pixels", "instances")


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

    def build_nms(self, input_size: int) -> Callable:
        """
        ``nms(boxes (n, 4), scores (C, n)) -> (scores, classes, order)`` of these settings
        (:func:`yolact_d2.layers.build_nms`) for a model of input size S.
        """
        return build_nms(
            self.nms_type,
            iou_threshold=self.nms_threshold,
            top_k=self.top_k,
            max_num_detections=self.max_detections_per_image,
            score_threshold=self.score_threshold,
            input_size=input_size,
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


def postprocess_predictions(
    outputs: Dict,
    image_sizes: Sequence[Tuple[int, int]],
    settings: PostprocessSettings,
    nms: Callable,
    box_variances: Tuple[float, float],
    maskiou_net: Optional[torch.nn.Module] = None,
    until: str = "instances",
) -> List:
    """
    YOLACT's inference after the network, as the reference's ``Detect`` and ``postprocess``:
    stages "decode", "nms", "mask_assembly" and "paste".

    Args:
        outputs (dict): the network's outputs (:meth:`~yolact_d2.modeling.Yolact.predict`):
            "class_logits" (N, R, C + 1), "box_deltas" (N, R, 4), "coefficients" (N, R, k),
            "prototypes" (N, k, h, w), "priors" (R, 4) relative to the input, "input_size"
            (H, W), and optionally "content_sizes" (the part of the input each image covers).
        image_sizes (list[tuple[int, int]]): original (H, W) of each image of the batch.
        settings (PostprocessSettings): the test-time options.
        nms (callable): :meth:`PostprocessSettings.build_nms` of ``settings``.
        box_variances (tuple[float, float]): the SSD variances of the box coder.
        maskiou_net (nn.Module or None): YOLACT++'s re-scoring network.
        until (str): the last stage (:data:`POSTPROCESS_STAGES`):

            * "detections": after NMS, per image a dict of "indices" (D,) into the priors,
              "scores" (D,), "classes" (D,) in [0, C), "boxes" (D, 4) relative XYXY;
            * "masks": also "masks" (D, h, w), soft, cropped by the box, at prototype
              resolution, and for YOLACT++ "mask_scores" (D,) (re-scoring applied);
            * "pixels": the same with "boxes" in integer pixels of the original image, the
              detections whose box has no area dropped (what the exported graph returns);
            * "instances": Detectron2 ``Instances`` at the original size, masks pasted
              (:func:`~yolact_d2.modeling.paste.paste_instances`), with
              ``pred_coefficients`` (D, k) when ``settings.output_coefficients``.

    Returns:
        list: one dict (or ``Instances``) per image.
    """
    if until not in POSTPROCESS_STAGES:
        raise ValueError(f"until must be one of {POSTPROCESS_STAGES}, got {until!r}")
    last = POSTPROCESS_STAGES.index(until)
    with stage("decode"):
        boxes = decode_boxes(outputs["box_deltas"], outputs["priors"], box_variances)
    results = []
    for i, image_size in enumerate(image_sizes):
        with stage("decode"):
            scores, candidates = select_candidates(
                outputs["class_logits"][i], settings.score_threshold
            )
        record_count("candidates", candidates.shape[0])
        with stage("nms"):
            result = suppress(boxes[i], scores, candidates, nms)
            result["boxes"] = boxes[i][result["indices"]].float()
        if last >= 1:
            with stage("mask_assembly"):
                result = assemble_detection_masks(
                    result,
                    boxes[i],
                    outputs["coefficients"][i],
                    outputs["prototypes"][i],
                    settings,
                    maskiou_net,
                )
        if last >= 2:
            content = outputs.get("content_sizes")
            if content is not None and tuple(content[i]) != tuple(outputs["input_size"]):
                result = detections_in_content(result, content[i], outputs["input_size"])
            with stage("paste"):
                # (Sizes stay symbolic while torch.export traces the "pixels" stage.)
                result = detections_in_pixels(result, (image_size[0], image_size[1]))
                if last == 3:
                    size = (int(image_size[0]), int(image_size[1]))
                    kept = result["indices"]
                    result = paste_instances(result, size, settings)
                    if settings.output_coefficients:
                        result.pred_coefficients = outputs["coefficients"][i][kept].float()
        results.append(result)
    return results
