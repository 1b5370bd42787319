# Copyright (c) yolact_d2 contributors.
"""The reference's initialisation of the layers that do not come from ImageNet weights."""

from torch import nn

__all__ = ["xavier_init"]


def xavier_init(module: nn.Module) -> None:
    """
    Every non-backbone conv of the reference (``Yolact.init_weights``): Xavier-uniform weight,
    zero bias.

    Args:
        module (nn.Module): a conv with ``weight`` and optional ``bias``.
    """
    nn.init.xavier_uniform_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
