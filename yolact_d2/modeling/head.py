# Copyright (c) yolact_d2 contributors.
"""YOLACT's prediction head, shared by all FPN levels."""

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.utils.registry import Registry

from .backbone.fpn import xavier_init

__all__ = ["YOLACT_HEAD_REGISTRY", "YolactHead", "build_yolact_head"]

YOLACT_HEAD_REGISTRY = Registry("YOLACT_HEAD")
YOLACT_HEAD_REGISTRY.__doc__ = """
Registry for YOLACT prediction heads. Called with ``obj(cfg, input_shapes, num_anchors)``; the
head maps a list of FPN features to (class logits, box deltas, mask coefficients), each
concatenated over levels in prior order.
"""


@YOLACT_HEAD_REGISTRY.register()
class YolactHead(nn.Module):
    """
    One module applied to every level: a 3x3 conv + ReLU ("upfeature"), then three parallel 3x3
    convs predicting, per prior, C + 1 class logits, 4 box deltas and k tanh mask coefficients.
    Outputs are laid out anchor-major per cell (channel = a * K + field), as the reference.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        conv_dim: int,
        num_anchors: int,
        num_classes: int,
        num_prototypes: int,
    ):
        """
        Args:
            in_channels (int): FPN channels.
            conv_dim (int): channels of the shared conv.
            num_anchors (int): A, priors per cell.
            num_classes (int): foreground classes C (the head predicts C + 1 logits).
            num_prototypes (int): k.
        """
        super().__init__()
        self.num_classes = num_classes
        self.num_prototypes = num_prototypes
        self.upfeature = Conv2d(in_channels, conv_dim, 3, padding=1, activation=F.relu)
        self.bbox_pred = Conv2d(conv_dim, num_anchors * 4, 3, padding=1)
        self.cls_score = Conv2d(conv_dim, num_anchors * (num_classes + 1), 3, padding=1)
        self.coefficients = Conv2d(conv_dim, num_anchors * num_prototypes, 3, padding=1)
        for conv in [self.upfeature, self.bbox_pred, self.cls_score, self.coefficients]:
            xavier_init(conv)

    @classmethod
    def from_config(cls, cfg, input_shapes: List[ShapeSpec], num_anchors: int):
        channels = {s.channels for s in input_shapes}
        assert len(channels) == 1, "the shared head needs the same channels on every level"
        return {
            "in_channels": channels.pop(),
            "conv_dim": cfg.MODEL.YOLACT.HEAD.CONV_DIM,
            "num_anchors": num_anchors,
            "num_classes": cfg.MODEL.YOLACT.NUM_CLASSES,
            "num_prototypes": cfg.MODEL.YOLACT.NUM_PROTOTYPES,
        }

    def forward(
        self, features: List[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            features (list[Tensor]): per level (N, C_in, H_l, W_l), P3 first.

        Returns:
            class_logits (Tensor): (N, R, C + 1), background at index 0.
            box_deltas (Tensor): (N, R, 4).
            coefficients (Tensor): (N, R, k) in (-1, 1).
            R = sum_l H_l * W_l * A, in prior order.
        """
        logits, deltas, coefficients = [], [], []
        for x in features:
            x = self.upfeature(x)
            logits.append(permute_to_N_HWA_K(self.cls_score(x), self.num_classes + 1))
            deltas.append(permute_to_N_HWA_K(self.bbox_pred(x), 4))
            coefficients.append(permute_to_N_HWA_K(self.coefficients(x), self.num_prototypes))
        return torch.cat(logits, 1), torch.cat(deltas, 1), torch.tanh(torch.cat(coefficients, 1))


def build_yolact_head(cfg, input_shapes: List[ShapeSpec], num_anchors: int) -> nn.Module:
    """Builds the head named by ``MODEL.YOLACT.HEAD.NAME``."""
    return YOLACT_HEAD_REGISTRY.get(cfg.MODEL.YOLACT.HEAD.NAME)(cfg, input_shapes, num_anchors)
