# Copyright (c) yolact_d2 contributors.
"""DarkNet-53 as used by yolact_darknet53."""

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import Backbone

__all__ = ["DarkNet53", "build_darknet_backbone"]


def _leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.1)


def _conv_bn_leaky(in_channels: int, out_channels: int, kernel_size: int, stride: int, norm: str):
    """Conv (no bias) -> norm -> LeakyReLU(0.1): DarkNet's basic layer."""
    return Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        bias=False,
        norm=get_norm(norm, out_channels),
        activation=_leaky_relu,
    )


class DarkNetBlock(nn.Module):
    """Residual block: 1x1 (2c -> c), 3x3 (c -> 2c), added to the input (no activation after)."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.conv1 = _conv_bn_leaky(2 * channels, channels, 1, 1, norm)
        self.conv2 = _conv_bn_leaky(channels, 2 * channels, 3, 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + x


class DarkNet53(Backbone):
    """
    DarkNet-53: a 3x3 stem (3 -> 32), then five stages ``dark1``..``dark5`` of a stride-2 3x3
    downsampling conv (index 0) followed by residual blocks; channels 64..1024, strides 2..32.
    """

    def __init__(self, num_blocks: List[int], out_features: List[str], norm: str = "BN"):
        super().__init__()
        self.stem = _conv_bn_leaky(3, 32, 3, 1, norm)
        channels = 32
        self._out_feature_channels, self._out_feature_strides = {}, {}
        self.stage_names = []
        for i, blocks in enumerate(num_blocks):
            layers = [_conv_bn_leaky(channels, channels * 2, 3, 2, norm)]
            layers += [DarkNetBlock(channels, norm) for _ in range(blocks)]
            channels *= 2
            name = f"dark{i + 1}"
            self.add_module(name, nn.Sequential(*layers))
            self.stage_names.append(name)
            self._out_feature_channels[name] = channels
            self._out_feature_strides[name] = 2 ** (i + 1)
        unknown = set(out_features) - set(self.stage_names)
        if unknown:
            raise ValueError(f"DarkNet53 has no features {sorted(unknown)}; has {self.stage_names}")
        self._out_features = list(out_features)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x (Tensor): (N, 3, H, W).

        Returns:
            dict[str, Tensor]: the requested ``darkN`` features.
        """
        x = self.stem(x)
        outputs = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


def build_darknet_backbone(cfg, input_shape: ShapeSpec) -> DarkNet53:
    """DarkNet-53 from ``MODEL.YOLACT.BACKBONE.DARKNET_BLOCKS`` and ``MODEL.FPN.IN_FEATURES``."""
    del input_shape
    return DarkNet53(
        num_blocks=cfg.MODEL.YOLACT.BACKBONE.DARKNET_BLOCKS,
        out_features=cfg.MODEL.FPN.IN_FEATURES,
        norm=cfg.MODEL.RESNETS.NORM,
    )
