# Copyright (c) yolact_d2 contributors.
"""Detectron2's ResNet with YOLACT++'s per-block deformable 3x3 convs."""

from typing import List

from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import ResNet, build_resnet_backbone

from yolact_d2.layers import ModulatedDeformConv2d

__all__ = ["build_yolact_resnet_backbone", "deformable_block_indices"]


def deformable_block_indices(num_blocks: int, deform_layers: int, interval: int) -> List[int]:
    """
    Which blocks of a stage get a deformable 3x3 conv, by the reference's rule: block 0 iff
    ``deform_layers >= num_blocks``; block i >= 1 iff ``i + deform_layers >= num_blocks`` and
    ``i % interval == 0``.

    Args:
        num_blocks (int): blocks in the stage.
        deform_layers (int): the reference's ``dcn_layers`` entry of the stage.
        interval (int): the reference's ``dcn_interval``.

    Returns:
        list[int]: block indices, ascending.
    """
    if deform_layers <= 0:
        return []
    chosen = [0] if deform_layers >= num_blocks else []
    chosen += [
        i for i in range(1, num_blocks) if i + deform_layers >= num_blocks and i % interval == 0
    ]
    return chosen


def build_yolact_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """
    Builds Detectron2's ResNet from ``MODEL.RESNETS`` and, for YOLACT++, replaces the 3x3
    ``conv2`` of the blocks chosen by ``MODEL.YOLACT.BACKBONE.DEFORM_LAYERS`` (one entry per
    res2..res5) and ``DEFORM_INTERVAL`` with a biased modulated deformable conv.
    """
    resnet = build_resnet_backbone(cfg, input_shape)
    deform_layers = cfg.MODEL.YOLACT.BACKBONE.DEFORM_LAYERS
    interval = cfg.MODEL.YOLACT.BACKBONE.DEFORM_INTERVAL
    if len(deform_layers) != 4:
        raise ValueError(
            f"MODEL.YOLACT.BACKBONE.DEFORM_LAYERS needs 4 entries (res2..res5), got {deform_layers}"
        )
    for stage_name, layers in zip(["res2", "res3", "res4", "res5"], deform_layers):
        if layers <= 0 or not hasattr(resnet, stage_name):
            continue
        stage: nn.Sequential = getattr(resnet, stage_name)
        for idx in deformable_block_indices(len(stage), layers, interval):
            block = stage[idx]
            if not hasattr(block, "conv2") or block.conv2.kernel_size != (3, 3):
                raise ValueError(f"{stage_name}.{idx} has no 3x3 conv2 to make deformable")
            block.conv2 = ModulatedDeformConv2d.from_conv(block.conv2)
    return resnet
