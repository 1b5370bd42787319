# Copyright (c) yolact_d2 contributors.
"""YOLACT's mask branch: the protonet, the training-only semantic-segmentation conv and YOLACT++'s
mask-IoU net, on one FPN level."""

from typing import Dict, List, Optional

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec

from .maskiou import MaskIoUNet
from .protonet import build_protonet
from .weight_init import xavier_init

__all__ = ["YolactMaskBranch", "upgrade_legacy_keys"]

# Modules that yolact_d2 kept at the top of the model before the mask branch existed.
_MOVED_TO_MASK_BRANCH = ("protonet.", "semantic_seg_conv.", "maskiou_net.")


def upgrade_legacy_keys(state_dict: Dict, prefix: str = "") -> List[str]:
    """
    Renames, in place, the keys of checkpoints written (or converted) by yolact_d2 before the
    mask branch existed: ``<prefix>protonet.*``, ``semantic_seg_conv.*`` and ``maskiou_net.*``
    become ``<prefix>mask_branch.*``. :class:`Yolact` runs it on every ``load_state_dict`` (so
    Detectron2's own checkpointer and ``DefaultPredictor`` load such files too).

    Args:
        state_dict (dict): a state dict, changed in place.
        prefix (str): where the model's keys start in ``state_dict``.

    Returns:
        list[str]: the renamed keys (their old names).
    """
    old = tuple(prefix + name for name in _MOVED_TO_MASK_BRANCH)
    moved = [k for k in state_dict if k.startswith(old)]
    for key in moved:
        state_dict[prefix + "mask_branch." + key[len(prefix) :]] = state_dict.pop(key)
    return moved


class YolactMaskBranch(nn.Module):
    """
    The layers of YOLACT that work on whole images rather than on priors: the protonet
    (k prototype masks from one FPN level), the 1x1 conv of the training-only
    semantic-segmentation loss on the same level, and YOLACT++'s mask re-scoring network. It
    runs its layers; the losses on their outputs are pure functions (see ``losses.py``).
    """

    @configurable
    def __init__(
        self,
        *,
        protonet: nn.Module,
        in_feature: str,
        semantic_seg_conv: Optional[nn.Module] = None,
        maskiou_net: Optional[MaskIoUNet] = None,
    ):
        """
        Args:
            protonet (nn.Module): maps the ``in_feature`` level to (N, k, h, w) prototypes.
            in_feature (str): the FPN level of the protonet and of the semantic conv ("p3").
            semantic_seg_conv (nn.Module or None): (N, C_in, h, w) -> (N, C, h, w) logits.
            maskiou_net (MaskIoUNet or None): YOLACT++ mask re-scoring.
        """
        super().__init__()
        self.protonet = protonet
        self.in_feature = in_feature
        self.semantic_seg_conv = semantic_seg_conv
        self.maskiou_net = maskiou_net

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        y = cfg.MODEL.YOLACT
        shape = input_shape[y.PROTONET.IN_FEATURE]
        protonet = build_protonet(cfg, shape)
        semantic_seg_conv = None
        if y.LOSS.SEMANTIC_SEG_WEIGHT > 0:
            semantic_seg_conv = nn.Conv2d(shape.channels, y.NUM_CLASSES, 1)
            xavier_init(semantic_seg_conv)
        return {
            "protonet": protonet,
            "in_feature": y.PROTONET.IN_FEATURE,
            "semantic_seg_conv": semantic_seg_conv,
            "maskiou_net": MaskIoUNet(y.NUM_CLASSES) if y.MASKIOU.ENABLED else None,
        }

    def forward(
        self, features: Dict[str, torch.Tensor], protonet: Optional[nn.Module] = None
    ) -> torch.Tensor:
        """
        Args:
            features (dict[str, Tensor]): FPN levels.
            protonet (nn.Module, optional): runs in place of this branch's protonet (the fast
                CPU path's BatchNorm-folded, channels_last copy of it).

        Returns:
            Tensor: (N, k, h, w) prototypes.
        """
        protonet = self.protonet if protonet is None else protonet
        return protonet(features[self.in_feature])

    def semantic_seg_logits(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """
        Returns:
            Tensor: (N, C, h, w) float32 semantic-segmentation logits (training only).
        """
        return self.semantic_seg_conv(features[self.in_feature]).float()

    def mask_iou(self, masks: torch.Tensor) -> torch.Tensor:
        """
        Args:
            masks (Tensor): (n, 1, h, w) soft masks at prototype resolution.

        Returns:
            Tensor: (n, C) predicted mask IoU per class. In training an empty batch still runs
            the network, so that every parameter takes part in the backward (as
            DistributedDataParallel requires) with a zero gradient.
        """
        if self.training and masks.shape[0] == 0:
            return self.maskiou_net.net(masks).amax(dim=(2, 3))
        return self.maskiou_net(masks)
