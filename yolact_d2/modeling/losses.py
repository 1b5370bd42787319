# Copyright (c) yolact_d2 contributors.
"""
YOLACT's training losses, exact to the reference's ``MultiBoxLoss``: pure functions of tensors
(the model runs its layers and passes their outputs in).
"""

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from .box_coder import encode_boxes
from .mask_assembly import assemble_masks, crop_masks
from .matching import match_priors

__all__ = [
    "YolactLoss",
    "ohem_class_loss",
    "box_loss",
    "mask_loss_one_image",
    "semantic_seg_loss",
    "mask_iou_loss",
    "downsample_gt_masks",
    "mask_iou",
]


def ohem_class_loss(
    class_logits: torch.Tensor, labels: torch.Tensor, neg_pos_ratio: int = 3
) -> torch.Tensor:
    """
    Softmax cross-entropy over positives and the hardest negatives (online hard example mining).

    Negatives are ranked per image by -log softmax(background); the top
    ``min(neg_pos_ratio * num_pos, R - 1)`` non-positive, non-ignored priors are used.

    Args:
        class_logits (Tensor): (N, R, C + 1).
        labels (Tensor): (N, R) int64: class + 1, 0 background, -1 ignored.
        neg_pos_ratio (int): negatives per positive.

    Returns:
        Tensor: scalar, the *summed* cross-entropy.
    """
    with torch.no_grad():
        mining = torch.logsumexp(class_logits, dim=-1) - class_logits[..., 0]
        positive = labels > 0
        mining[positive | (labels < 0)] = 0
        rank = mining.argsort(dim=1, descending=True).argsort(dim=1)
        num_pos = positive.sum(dim=1, keepdim=True)
        num_neg = torch.clamp(neg_pos_ratio * num_pos, max=labels.shape[1] - 1)
        negative = (rank < num_neg) & ~positive & (labels >= 0)
        selected = positive | negative
    return F.cross_entropy(class_logits[selected], labels[selected], reduction="sum")


def box_loss(deltas: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    Args:
        deltas (Tensor): (P, 4) predicted deltas of the positive priors.
        targets (Tensor): (P, 4) encoded targets.

    Returns:
        Tensor: scalar summed smooth-L1 (beta 1).
    """
    return F.smooth_l1_loss(deltas, targets, reduction="sum", beta=1.0)


def downsample_gt_masks(masks: torch.Tensor, size) -> torch.Tensor:
    """
    Args:
        masks (Tensor): (G, H, W) binary masks.
        size (tuple[int, int]): target (h, w).

    Returns:
        Tensor: (G, h, w) float {0, 1}: bilinear (align_corners=False) resize, then > 0.5.
    """
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.float32)
    down = F.interpolate(masks[None].float(), size, mode="bilinear", align_corners=False)[0]
    return (down > 0.5).float()


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """
    Args:
        pred, gt (Tensor): (n, h, w) binary masks.

    Returns:
        Tensor: (n,) IoU of each pair.
    """
    inter = (pred * gt).sum(dim=(1, 2))
    union = pred.sum(dim=(1, 2)) + gt.sum(dim=(1, 2)) - inter
    return inter / union


def mask_loss_one_image(
    prototypes: torch.Tensor,
    coefficients: torch.Tensor,
    gt_masks: torch.Tensor,
    gt_boxes: torch.Tensor,
    max_masks: int,
) -> Dict[str, torch.Tensor]:
    """
    The mask loss of one image, before the division by the positives of the batch.

    Each positive's mask sigmoid(P c) is cropped by its ground-truth box (1 px pad) and compared
    with the ground truth (BCE); per instance the pixel sum is divided by the box area in
    prototype pixels. At most ``max_masks`` random positives are used, and the sum is scaled by
    (positives / used) to compensate.

    Args:
        prototypes (Tensor): (k, h, w).
        coefficients (Tensor): (P, k) coefficients of the positive priors.
        gt_masks (Tensor): (P, h, w) float {0, 1} matched ground truth at prototype size.
        gt_boxes (Tensor): (P, 4) relative XYXY matched ground-truth boxes.
        max_masks (int): the reference's ``masks_to_train``.

    Returns:
        dict: "loss" (scalar, the sum over used instances times the rescale factor),
        "pred_masks" (n, h, w) cropped soft masks of the used instances, "selected" (n,)
        indices of the used positives.
    """
    num_pos = coefficients.shape[0]
    selected = torch.arange(num_pos, device=coefficients.device)
    if num_pos > max_masks:
        selected = torch.randperm(num_pos, device=coefficients.device)[:max_masks]
    boxes = gt_boxes[selected]
    pred = crop_masks(assemble_masks(prototypes.float(), coefficients[selected].float()), boxes)
    # BCE on probabilities is not autocast-safe, and raises on NaN: compute it in float32 on
    # finite values, and let a non-finite prediction make the loss non-finite (a skipped step).
    with torch.autocast(pred.device.type, enabled=False):
        bce = F.binary_cross_entropy(
            pred.float().clamp(0, 1).nan_to_num(0.5), gt_masks[selected].float(), reduction="none"
        )
    h, w = prototypes.shape[-2:]
    box_area = ((boxes[:, 2] - boxes[:, 0]) * w) * ((boxes[:, 3] - boxes[:, 1]) * h)
    loss = (bce.sum(dim=(1, 2)) / box_area).sum() * (num_pos / len(selected)) + pred.sum() * 0
    return {"loss": loss, "pred_masks": pred, "selected": selected}


def semantic_seg_loss(
    logits: torch.Tensor, gt_masks: List[torch.Tensor], gt_classes: List[torch.Tensor]
) -> torch.Tensor:
    """
    Args:
        logits (Tensor): (N, C, h, w) semantic-segmentation logits on P3.
        gt_masks (list[Tensor]): per image (G, H, W) binary non-crowd masks.
        gt_classes (list[Tensor]): per image (G,) classes in [0, C).

    Returns:
        Tensor: scalar, sum over images of BCE-with-logits (summed over pixels) / (h * w).
    """
    h, w = logits.shape[-2:]
    total = logits.new_zeros(())
    for image_logits, masks, classes in zip(logits, gt_masks, gt_classes):
        target = torch.zeros_like(image_logits)
        down = downsample_gt_masks(masks, (h, w))
        for c in classes.unique():
            target[c] = down[classes == c].amax(dim=0)
        total = total + F.binary_cross_entropy_with_logits(image_logits, target, reduction="sum")
    return total / (h * w)


def mask_iou_loss(
    predicted: torch.Tensor, targets: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """
    YOLACT++'s mask re-scoring loss, before weighting and normalisation.

    Args:
        predicted (Tensor): (n, C) the mask-IoU net's outputs for n masks.
        targets (Tensor): (n,) IoU of each (binarised) mask with its ground truth.
        classes (Tensor): (n,) the ground-truth class of each mask.

    Returns:
        Tensor: scalar summed smooth-L1 between the predicted IoU of the true class and the
        target (0 for n = 0, still connected to ``predicted``).
    """
    chosen = predicted.gather(1, classes[:, None]).squeeze(1)
    return F.smooth_l1_loss(chosen, targets, reduction="sum")


class YolactLoss(nn.Module):
    """
    The reference's losses with their constants: ``loss_cls`` (OHEM softmax CE), ``loss_box``
    (smooth-L1), ``loss_mask`` (cropped, box-normalised BCE) from the network's predictions
    (:meth:`forward`, which also returns what YOLACT++'s mask-IoU loss needs), then
    ``loss_semantic_seg`` (:meth:`semantic_seg`) and ``loss_maskiou`` (:meth:`maskiou`) from
    the mask branch's outputs. Box, class, mask and mask-IoU losses are divided by the
    positives of the whole batch, the semantic-segmentation loss by the batch size, as the
    reference. It has no parameters and runs no layer.
    """

    @configurable
    def __init__(
        self,
        *,
        input_size: int,
        box_variances=(0.1, 0.2),
        pos_iou_threshold: float = 0.5,
        neg_iou_threshold: float = 0.4,
        crowd_iou_threshold: float = 0.7,
        neg_pos_ratio: int = 3,
        class_weight: float = 1.0,
        box_weight: float = 1.5,
        mask_weight: float = 6.125,
        semantic_seg_weight: float = 1.0,
        masks_to_train: int = 100,
        maskiou_weight: float = 25.0,
        discard_mask_area: float = 25,
        maskiou_enabled: bool = False,
    ):
        super().__init__()
        self.input_size = input_size
        self.box_variances = tuple(box_variances)
        self.pos_iou_threshold = pos_iou_threshold
        self.neg_iou_threshold = neg_iou_threshold
        self.crowd_iou_threshold = crowd_iou_threshold
        self.neg_pos_ratio = neg_pos_ratio
        self.class_weight = class_weight
        self.box_weight = box_weight
        self.mask_weight = mask_weight
        self.semantic_seg_weight = semantic_seg_weight
        self.masks_to_train = masks_to_train
        self.maskiou_weight = maskiou_weight
        self.discard_mask_area = discard_mask_area
        self.maskiou_enabled = maskiou_enabled

    @classmethod
    def from_config(cls, cfg):
        y = cfg.MODEL.YOLACT
        return {
            "input_size": y.INPUT_SIZE,
            "box_variances": y.BOX_VARIANCES,
            "pos_iou_threshold": y.LOSS.POS_IOU_THRESHOLD,
            "neg_iou_threshold": y.LOSS.NEG_IOU_THRESHOLD,
            "crowd_iou_threshold": y.LOSS.CROWD_IOU_THRESHOLD,
            "neg_pos_ratio": y.LOSS.NEG_POS_RATIO,
            "class_weight": y.LOSS.CLASS_WEIGHT,
            "box_weight": y.LOSS.BOX_WEIGHT,
            "mask_weight": y.LOSS.MASK_WEIGHT,
            "semantic_seg_weight": y.LOSS.SEMANTIC_SEG_WEIGHT,
            "masks_to_train": y.LOSS.MASKS_TO_TRAIN,
            "maskiou_weight": y.LOSS.MASKIOU_WEIGHT,
            "discard_mask_area": y.LOSS.DISCARD_MASK_AREA,
            "maskiou_enabled": y.MASKIOU.ENABLED,
        }

    def _targets(self, gt: Instances, crowd_boxes: torch.Tensor, priors: torch.Tensor, size):
        # pixels of the (H, W) network input -> relative to it, as the priors
        height, width = size
        pixels = gt.gt_boxes.tensor
        scale = torch.tensor(
            [width, height, width, height], dtype=pixels.dtype, device=pixels.device
        )
        boxes = pixels / scale
        labels, matched = match_priors(
            boxes,
            gt.gt_classes,
            crowd_boxes / scale,
            priors,
            self.pos_iou_threshold,
            self.neg_iou_threshold,
            self.crowd_iou_threshold,
        )
        return labels, matched, boxes

    def forward(
        self,
        outputs: Dict[str, torch.Tensor],
        gt_instances: List[Instances],
        crowd_boxes: List[torch.Tensor],
    ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """
        Args:
            outputs (dict): from :meth:`Yolact.predict`.
            gt_instances (list[Instances]): per image gt_boxes (pixels of the network input,
                S x S, or ``outputs["input_size"]``), gt_classes and gt_masks (BitMasks of the
                input's size); crowds excluded.
            crowd_boxes (list[Tensor]): per image (M, 4) pixel XYXY crowd boxes.

        Returns:
            losses (dict[str, Tensor]): "loss_cls", "loss_box", "loss_mask", weighted.
            maskiou_inputs (dict[str, Tensor]): for YOLACT++ (empty otherwise): "masks"
                (n, 1, h, w) the trained soft masks whose ground truth is larger than
                ``discard_mask_area``, "targets" (n,) their IoU with it, "classes" (n,), and
                "normalizer" (the positives of the batch); see :meth:`maskiou`.
        """
        priors = outputs["priors"]
        logits, deltas = outputs["class_logits"], outputs["box_deltas"]
        coefficients, prototypes = outputs["coefficients"], outputs["prototypes"]
        proto_size = prototypes.shape[-2:]
        input_size = outputs.get("input_size", (self.input_size, self.input_size))
        labels, box_targets, mask_sum = [], [], logits.new_zeros(())
        maskiou_masks, maskiou_targets, maskiou_classes = [], [], []
        total_pos = 0
        for i, (gt, crowds) in enumerate(zip(gt_instances, crowd_boxes)):
            image_labels, matched, boxes = self._targets(gt, crowds, priors, input_size)
            labels.append(image_labels)
            positive = image_labels > 0
            total_pos += int(positive.sum())
            pos_matched = matched[positive]
            if len(boxes):
                box_targets.append(
                    encode_boxes(boxes[pos_matched], priors[positive], self.box_variances)
                )
            if not positive.any():
                continue
            gt_masks = downsample_gt_masks(gt.gt_masks.tensor, proto_size)
            result = mask_loss_one_image(
                prototypes[i],
                coefficients[i][positive],
                gt_masks[pos_matched],
                boxes[pos_matched],
                self.masks_to_train,
            )
            mask_sum = mask_sum + result["loss"]
            if self.maskiou_enabled:
                used = pos_matched[result["selected"]]
                target_masks = gt_masks[used]
                big = target_masks.sum(dim=(1, 2)) > self.discard_mask_area
                pred = result["pred_masks"][big]
                maskiou_masks.append(pred[:, None])
                maskiou_targets.append(mask_iou((pred > 0.5).float(), target_masks[big]))
                maskiou_classes.append(gt.gt_classes[used][big])

        labels = torch.stack(labels)
        positive = labels > 0
        normalizer = max(total_pos, 1)
        pos_deltas = deltas[positive]
        box_t = torch.cat(box_targets) if box_targets else pos_deltas.new_zeros((0, 4))
        losses = {
            "loss_cls": ohem_class_loss(logits, labels, self.neg_pos_ratio)
            * self.class_weight
            / normalizer,
            "loss_box": box_loss(pos_deltas, box_t) * self.box_weight / normalizer,
            "loss_mask": mask_sum * self.mask_weight / normalizer,
        }
        maskiou_inputs = {}
        if self.maskiou_enabled:
            empty = prototypes.new_zeros((0, 1, *proto_size))
            maskiou_inputs = {
                "masks": torch.cat(maskiou_masks) if maskiou_masks else empty,
                "targets": torch.cat(maskiou_targets) if maskiou_targets else empty.new_zeros(0),
                "classes": (
                    torch.cat(maskiou_classes)
                    if maskiou_classes
                    else labels.new_zeros(0, dtype=torch.long)
                ),
                "normalizer": normalizer,
            }
        try:
            get_event_storage().put_scalar("num_pos_priors", total_pos / len(gt_instances))
        except AssertionError:  # no EventStorage outside a trainer
            pass
        return losses, maskiou_inputs

    def semantic_seg(self, logits: torch.Tensor, gt_instances: List[Instances]) -> torch.Tensor:
        """
        Args:
            logits (Tensor): (N, C, h, w) the mask branch's semantic-segmentation logits.
            gt_instances (list[Instances]): as in :meth:`forward`.

        Returns:
            Tensor: ``loss_semantic_seg``, weighted and divided by the batch size.
        """
        seg = semantic_seg_loss(
            logits,
            [gt.gt_masks.tensor for gt in gt_instances],
            [gt.gt_classes for gt in gt_instances],
        )
        return seg * self.semantic_seg_weight / len(gt_instances)

    def maskiou(self, predicted: torch.Tensor, maskiou_inputs: Dict[str, torch.Tensor]):
        """
        Args:
            predicted (Tensor): (n, C) the mask branch's mask-IoU predictions for
                ``maskiou_inputs["masks"]``.
            maskiou_inputs (dict): from :meth:`forward`.

        Returns:
            Tensor: ``loss_maskiou``, weighted and divided by the positives of the batch.
        """
        loss = mask_iou_loss(predicted, maskiou_inputs["targets"], maskiou_inputs["classes"])
        return loss * self.maskiou_weight / maskiou_inputs["normalizer"]
