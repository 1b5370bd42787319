# Copyright (c) yolact_d2 contributors.
"""YOLACT's FPN on top of any Detectron2 bottom-up backbone."""

import math
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ..weight_init import xavier_init
from .darknet import build_darknet_backbone
from .resnet import build_yolact_resnet_backbone

__all__ = [
    "YolactFPN",
    "build_yolact_resnet_fpn_backbone",
    "build_yolact_darknet_fpn_backbone",
]


class YolactFPN(Backbone):
    """
    The FPN of YOLACT, which differs from Detectron2's :class:`detectron2.modeling.FPN`:

    * the top-down path upsamples *bilinearly to the exact lateral size* (18 -> 35 -> 69 at 550),
      not by nearest x2;
    * a ReLU follows each 3x3 output conv of P3-P5;
    * P6 and P7 are stride-2 3x3 convs applied to the post-ReLU P5, then to P6, with no ReLU
      between them (``top_block.p6``, ``top_block.p7``);
    * no input padding: ``size_divisibility`` is 0 and the 550 input yields 69/35/18/9/5.

    Parameter names follow Detectron2's FPN (``fpn_lateral{l}``, ``fpn_output{l}``).
    """

    def __init__(
        self,
        bottom_up: Backbone,
        in_features: List[str],
        out_channels: int = 256,
        num_downsample: int = 2,
    ):
        """
        Args:
            bottom_up (Backbone): provides ``in_features`` at log2-contiguous strides.
            in_features (list[str]): bottom-up features, finest first (e.g. res3, res4, res5).
            out_channels (int): FPN channels.
            num_downsample (int): extra stride-2 levels on top of the coarsest one.
        """
        super().__init__()
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        shapes = bottom_up.output_shape()
        strides = [shapes[f].stride for f in self.in_features]
        self._levels = [int(math.log2(s)) for s in strides]
        for a, b in zip(self._levels, self._levels[1:]):
            if b != a + 1:
                raise ValueError(f"FPN input strides must be log2-contiguous, got {strides}")
        for level, name in zip(self._levels, self.in_features):
            lateral = Conv2d(shapes[name].channels, out_channels, kernel_size=1)
            output = Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
            xavier_init(lateral)
            xavier_init(output)
            self.add_module(f"fpn_lateral{level}", lateral)
            self.add_module(f"fpn_output{level}", output)
        self.top_block = nn.Module()
        top = self._levels[-1]
        self._top_names = []
        for i in range(num_downsample):
            conv = Conv2d(out_channels, out_channels, kernel_size=3, stride=2, padding=1)
            xavier_init(conv)
            name = f"p{top + i + 1}"
            self.top_block.add_module(name, conv)
            self._top_names.append(name)
        all_levels = self._levels + [top + i + 1 for i in range(num_downsample)]
        self._out_features = [f"p{level}" for level in all_levels]
        self._out_feature_strides = {f"p{level}": 2**level for level in all_levels}
        self._out_feature_channels = {f: out_channels for f in self._out_features}

    @property
    def size_divisibility(self) -> int:
        return 0

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x (Tensor): (N, 3, S, S) normalised images.

        Returns:
            dict[str, Tensor]: "p3".."p7" feature maps, each (N, C, H_l, W_l).
        """
        bottom_up = self.bottom_up(x)
        inputs = [bottom_up[f] for f in self.in_features]
        top_down = getattr(self, f"fpn_lateral{self._levels[-1]}")(inputs[-1])
        merged = [top_down]
        for level, feature in zip(reversed(self._levels[:-1]), reversed(inputs[:-1])):
            top_down = F.interpolate(
                top_down, size=feature.shape[-2:], mode="bilinear", align_corners=False
            )
            top_down = top_down + getattr(self, f"fpn_lateral{level}")(feature)
            merged.insert(0, top_down)
        results = [
            F.relu(getattr(self, f"fpn_output{level}")(m)) for level, m in zip(self._levels, merged)
        ]
        for name in self._top_names:
            results.append(getattr(self.top_block, name)(results[-1]))
        return dict(zip(self._out_features, results))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


def _build_fpn(cfg, bottom_up: Backbone) -> YolactFPN:
    return YolactFPN(
        bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        num_downsample=len(cfg.MODEL.YOLACT.IN_FEATURES) - len(cfg.MODEL.FPN.IN_FEATURES),
    )


@BACKBONE_REGISTRY.register()
def build_yolact_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> YolactFPN:
    """
    Detectron2's ResNet (``MODEL.RESNETS``, optionally with YOLACT++'s per-block deformable
    convs) under YOLACT's FPN.
    """
    return _build_fpn(cfg, build_yolact_resnet_backbone(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_yolact_darknet_fpn_backbone(cfg, input_shape: ShapeSpec) -> YolactFPN:
    """DarkNet-53 (yolact_darknet53) under YOLACT's FPN."""
    return _build_fpn(cfg, build_darknet_backbone(cfg, input_shape))
