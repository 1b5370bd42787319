# Copyright (c) yolact_d2 contributors.
"""Modulated deformable convolution (DCNv2) on ``torchvision.ops.deform_conv2d``."""

import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d

__all__ = ["ModulatedDeformConv2d"]


class ModulatedDeformConv2d(nn.Module):
    """
    A drop-in replacement for a square-kernel ``Conv2d`` (with optional ``norm`` and
    ``activation``, as Detectron2's ``layers.Conv2d``) that predicts its own offsets and
    modulation masks, like YOLACT++'s DCN blocks.

    ``conv_offset_mask`` outputs 3 * K * K channels: the first 2 * K * K are the (dy, dx)
    offsets of each kernel tap, the last K * K the modulation logits (sigmoid applied). The
    offset conv is zero-initialised, so a fresh module starts as a regular convolution.
    Needs no compiled Detectron2 op; runs wherever torchvision runs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        bias: bool = True,
        norm: nn.Module = None,
        activation=None,
    ):
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.conv_offset_mask = nn.Conv2d(
            in_channels,
            3 * kernel_size * kernel_size,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=True,
        )
        self.norm = norm
        self.activation = activation
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    @classmethod
    def from_conv(cls, conv: nn.Module) -> "ModulatedDeformConv2d":
        """
        Builds a deformable conv with the geometry, norm and activation of ``conv`` (a
        Detectron2 ``Conv2d``), copying its weight.
        """
        module = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size[0],
            stride=conv.stride[0],
            padding=conv.padding[0],
            dilation=conv.dilation[0],
            bias=True,
            norm=getattr(conv, "norm", None),
            activation=getattr(conv, "activation", None),
        )
        with torch.no_grad():
            module.weight.copy_(conv.weight)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (Tensor): (N, C_in, H, W).

        Returns:
            Tensor: (N, C_out, H', W').
        """
        out = self.conv_offset_mask(x)
        taps = out.shape[1] // 3
        offset, mask = out[:, : 2 * taps], torch.sigmoid(out[:, 2 * taps :])
        # torchvision's kernel has no reduced-precision CPU path: run it in float32.
        dtype = x.dtype
        x = deform_conv2d(
            x.float(),
            offset.float(),
            self.weight.float(),
            None if self.bias is None else self.bias.float(),
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask.float(),
        ).to(dtype)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x
