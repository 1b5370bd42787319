# Copyright (c) yolact_d2 contributors.
"""YOLACT++'s fast mask re-scoring network."""

import torch
from torch import nn
from torch.fx.experimental.symbolic_shapes import guard_or_false

from .weight_init import xavier_init

__all__ = ["MaskIoUNet"]

# Output channels of the five stride-2 convs.
_CHANNELS = (8, 16, 32, 64, 128)


class MaskIoUNet(nn.Module):
    """
    Five stride-2 3x3 convs (no padding; 1 -> 8 -> 16 -> 32 -> 64 -> 128) with ReLU, a 1x1 conv to
    C classes with ReLU, then a global max-pool: predicts the IoU of a mask with its object for
    every class.
    """

    # The name (inside the module) of the one layer whose shape depends on the number of
    # classes, the final 1x1 conv: each stride-2 conv and each ReLU is one entry of ``net``.
    CLASS_LAYER = f"net.{2 * len(_CHANNELS)}"

    def __init__(self, num_classes: int):
        super().__init__()
        layers, channels = [], 1
        for out_channels in _CHANNELS:
            layers += [nn.Conv2d(channels, out_channels, 3, stride=2), nn.ReLU(inplace=True)]
            channels = out_channels
        layers += [nn.Conv2d(channels, num_classes, 1), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)
        for m in self.net:
            if isinstance(m, nn.Conv2d):
                xavier_init(m)

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """
        Args:
            masks (Tensor): (n, 1, H, W) soft masks at prototype resolution.

        Returns:
            Tensor: (n, C) predicted mask IoU per class.
        """
        # (False when exporting with a data-dependent count: the convs handle an empty batch.)
        if guard_or_false(masks.shape[0] == 0):
            return masks.new_zeros((0, self.net[-2].out_channels))
        return self.net(masks).amax(dim=(2, 3))
