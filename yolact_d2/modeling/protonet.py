# Copyright (c) yolact_d2 contributors.
"""The protonet: an FCN producing k image-sized prototype masks from P3."""

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.utils.registry import Registry

from .weight_init import xavier_init

__all__ = ["YOLACT_PROTONET_REGISTRY", "ProtoNet", "build_protonet"]

YOLACT_PROTONET_REGISTRY = Registry("YOLACT_PROTONET")
YOLACT_PROTONET_REGISTRY.__doc__ = """
Registry for YOLACT protonets, which map one FPN feature (N, C, H, W) to prototypes
(N, k, H', W'). The registered object is called with ``obj(cfg, input_shape)``.
"""


@YOLACT_PROTONET_REGISTRY.register()
class ProtoNet(nn.Module):
    """
    ``num_convs`` 3x3 convs with ReLU, a bilinear x2 upsample, one more 3x3 conv with ReLU and a
    1x1 conv to k prototypes, followed by ReLU (the released models' ``mask_proto_net``).
    """

    @configurable
    def __init__(self, *, in_channels: int, conv_dim: int, num_convs: int, num_prototypes: int):
        """
        Args:
            in_channels (int): channels of the input FPN level.
            conv_dim (int): channels of the hidden convs.
            num_convs (int): 3x3 convs before the upsample.
            num_prototypes (int): k.
        """
        super().__init__()
        self.convs = nn.ModuleList()
        for i in range(num_convs):
            self.convs.append(
                Conv2d(
                    in_channels if i == 0 else conv_dim, conv_dim, 3, padding=1, activation=F.relu
                )
            )
        self.upsample_conv = Conv2d(conv_dim, conv_dim, 3, padding=1, activation=F.relu)
        self.predictor = Conv2d(conv_dim, num_prototypes, 1)
        for conv in [*self.convs, self.upsample_conv, self.predictor]:
            xavier_init(conv)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        p = cfg.MODEL.YOLACT.PROTONET
        return {
            "in_channels": input_shape.channels,
            "conv_dim": p.CONV_DIM,
            "num_convs": p.NUM_CONVS_BEFORE_UPSAMPLE,
            "num_prototypes": cfg.MODEL.YOLACT.NUM_PROTOTYPES,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (Tensor): (N, C, H, W) the FPN level (P3).

        Returns:
            Tensor: (N, k, 2H, 2W) non-negative prototypes.
        """
        for conv in self.convs:
            x = conv(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return F.relu(self.predictor(self.upsample_conv(x)))


def build_protonet(cfg, input_shape: ShapeSpec) -> nn.Module:
    """Builds the protonet named by ``MODEL.YOLACT.PROTONET.NAME``."""
    return YOLACT_PROTONET_REGISTRY.get(cfg.MODEL.YOLACT.PROTONET.NAME)(cfg, input_shape)
