# Copyright (c) yolact_d2 contributors.
"""
How the operations of an exported YOLACT become standard ONNX operators.

* ``torch.ops.yolact_d2.fast_nms`` (the registered Fast NMS op) is decomposed into
  :func:`~yolact_d2.layers.fast_nms_traceable`, the same algorithm in plain ATen operations,
  before translation (:data:`DECOMPOSITIONS`).
* ``aten.sort.stable``, which that decomposition uses for the per-class top-k and which the
  exporter's own library does not translate, becomes ``TopK`` with equal values ordered by
  index (:func:`sort_stable`): exactly a stable sort, on every runtime.
* ``torchvision::deform_conv2d`` (YOLACT++) becomes ONNX ``DeformConv`` (opset 19), which takes
  the same offset layout ((dy, dx) per kernel tap) and the modulation mask.
"""

from typing import Dict

import torch
from onnx import TensorProto
from onnxscript import opset18, opset19

from yolact_d2.layers import fast_nms_traceable

__all__ = ["DECOMPOSITIONS", "TRANSLATIONS", "MIN_OPSET", "MIN_OPSET_DEFORMABLE"]

# The lowest opset torch.onnx's exporter writes (both runtimes load it); DeformConv needs 19.
MIN_OPSET = 18
MIN_OPSET_DEFORMABLE = 19
INT64 = TensorProto.INT64

DECOMPOSITIONS: Dict = {torch.ops.yolact_d2.fast_nms.default: fast_nms_traceable}


def sort_stable(self, stable=None, dim: int = -1, descending: bool = False):
    """
    ``aten.sort.stable`` -> ONNX. ``TopK`` alone is not enough: ONNX defines its order of equal
    values (lower index first), but onnxruntime does not follow it. So equal values are ordered
    explicitly: TopK over the whole axis, then every element's tie group (how many value changes
    precede it along the sorted axis) and its original index make the unique integer key
    ``group * length + index``, and a TopK of that key gives the stable order.
    """
    axis = dim % len(self.shape)
    length = opset18.Shape(self, start=axis, end=axis + 1)
    values, indices = opset18.TopK(self, length, axis=axis, largest=int(bool(descending)), sorted=1)
    axes = opset18.Constant(value_ints=[axis])
    zero, one = opset18.Constant(value_ints=[0]), opset18.Constant(value_ints=[1])
    end = opset18.Constant(value_ints=[2**62])
    head = opset18.Slice(values, zero, opset18.Constant(value_ints=[-1]), axes)
    tail = opset18.Slice(values, one, end, axes)
    first = opset18.Slice(values, zero, one, axes)
    starts_group = opset18.Concat(
        opset18.Mul(opset18.Cast(opset18.Equal(first, first), to=INT64), zero),
        opset18.Cast(opset18.Not(opset18.Equal(tail, head)), to=INT64),
        axis=axis,
    )
    group = opset18.CumSum(starts_group, axes)
    key = opset18.Add(opset18.Mul(group, length), indices)
    _, order = opset18.TopK(key, length, axis=axis, largest=0, sorted=1)
    return (
        opset18.GatherElements(values, order, axis=axis),
        opset18.GatherElements(indices, order, axis=axis),
    )


def deform_conv2d(
    input,
    weight,
    offset,
    mask,
    bias,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dilation_h: int,
    dilation_w: int,
    groups: int,
    offset_groups: int,
    use_mask: bool,
):
    """``torchvision::deform_conv2d`` -> ONNX ``DeformConv``."""
    kernel_shape = [weight.shape[2], weight.shape[3]]
    return opset19.DeformConv(
        input,
        weight,
        offset,
        bias,
        mask if use_mask else None,
        dilations=[dilation_h, dilation_w],
        group=groups,
        kernel_shape=kernel_shape,
        offset_group=offset_groups,
        pads=[pad_h, pad_w, pad_h, pad_w],
        strides=[stride_h, stride_w],
    )


TRANSLATIONS: Dict = {
    torch.ops.aten.sort.stable: sort_stable,
    torch.ops.torchvision.deform_conv2d.default: deform_conv2d,
}
