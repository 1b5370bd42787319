# Copyright (c) yolact_d2 contributors.
"""YOLACT's priors (anchors): relative (cx, cy, w, h) boxes in the reference's exact order."""

import math
import numpy as np
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from detectron2.config import configurable

__all__ = ["YolactPriorGenerator", "generate_level_priors"]


def generate_level_priors(
    feature_size: Tuple[int, int],
    scales: Sequence[float],
    aspect_ratios: Sequence[float],
    input_size: Union[int, Tuple[int, int]],
    square: bool,
) -> torch.Tensor:
    """
    Priors of one FPN level, bit-identical to the reference (computed in float64, then cast).

    Order: rows (y) outer, columns (x), then scales, then aspect ratios; the prior at cell
    (y, x) has centre ((x + 0.5) / W, (y + 0.5) / H) and size (s * sqrt(r) / S, s / sqrt(r) / S)
    for scale s, ratio r = width / height and input size S, or a square of side s * sqrt(r) / S
    when ``square`` (the released YOLACT v1 checkpoints).

    On a non-square input of (H_in, W_in) pixels (the aspect-ratio-preserving mode) the sizes
    are divided by the side they are measured along, (s * sqrt(r) / W_in, s / sqrt(r) / H_in)
    and for ``square`` (s * sqrt(r) / W_in, s * sqrt(r) / H_in): in pixels every prior is then
    s * sqrt(r) wide and s / sqrt(r) (or s * sqrt(r)) high, as in the square mode, whatever
    the input's shape. Centres stay spread evenly over the input, (x + 0.5) / W of its width.

    Args:
        feature_size (tuple[int, int]): (H, W) of the level's feature map.
        scales (list[float]): prior scales in input pixels.
        aspect_ratios (list[float]): width / height ratios.
        input_size (int or tuple[int, int]): the network input side S, or its (H_in, W_in).
        square (bool): use square priors.

    Returns:
        Tensor: (H * W * len(scales) * len(aspect_ratios), 4) float32 (cx, cy, w, h).
    """
    conv_h, conv_w = feature_size
    in_h, in_w = (input_size, input_size) if isinstance(input_size, int) else input_size
    shapes = []
    for scale in scales:
        for ratio in aspect_ratios:
            root = math.sqrt(ratio)
            w = scale * root / in_w
            h = (scale * root if square else scale / root) / in_h
            shapes.append((w, h))
    shapes = np.asarray(shapes, dtype=np.float64).reshape(1, 1, -1, 2)
    ys = (np.arange(conv_h, dtype=np.float64) + 0.5) / conv_h
    xs = (np.arange(conv_w, dtype=np.float64) + 0.5) / conv_w
    centers = np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1)  # (H, W, 2) as (x, y)
    centers = np.broadcast_to(centers[:, :, None, :], (conv_h, conv_w, shapes.shape[2], 2))
    sizes = np.broadcast_to(shapes, centers.shape)
    priors = np.concatenate([centers, sizes], axis=-1).reshape(-1, 4)
    return torch.from_numpy(priors.astype(np.float32))


class YolactPriorGenerator(nn.Module):
    """
    Generates (and caches per feature-map size) the priors of all levels, concatenated in the
    order of the prediction head's outputs.
    """

    @configurable
    def __init__(
        self,
        *,
        scales: List[List[float]],
        aspect_ratios: List[float],
        input_size: int,
        square: bool,
    ):
        """
        Args:
            scales (list[list[float]]): per level, the prior scales in input pixels.
            aspect_ratios (list[float]): width / height ratios shared by all levels.
            input_size (int): the network input side S the scales are relative to.
            square (bool): square priors (YOLACT v1 checkpoints).
        """
        super().__init__()
        self.scales = [list(map(float, s)) for s in scales]
        self.aspect_ratios = list(map(float, aspect_ratios))
        self.input_size = int(input_size)
        self.square = bool(square)
        self._cache: Dict[Tuple, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg):
        p = cfg.MODEL.YOLACT.PRIORS
        return {
            "scales": p.SCALES,
            "aspect_ratios": p.ASPECT_RATIOS,
            "input_size": cfg.MODEL.YOLACT.INPUT_SIZE,
            "square": p.SQUARE,
        }

    @property
    def num_priors_per_location(self) -> int:
        """A, the number of priors at each feature-map cell (the same on every level)."""
        counts = {len(s) * len(self.aspect_ratios) for s in self.scales}
        assert len(counts) == 1, "every level must have the same number of priors per location"
        return counts.pop()

    def forward(
        self,
        feature_sizes: List[Tuple[int, int]],
        device=None,
        input_size: Optional[Tuple[int, int]] = None,
    ) -> torch.Tensor:
        """
        Args:
            feature_sizes (list[tuple[int, int]]): (H, W) of each level, P3 first.
            device: where the result should live.
            input_size (tuple[int, int], optional): (H_in, W_in) of the network input the
                priors are relative to; (S, S) when not given.

        Returns:
            Tensor: (R, 4) relative (cx, cy, w, h) priors, R = sum_l H_l * W_l * A.
        """
        if len(feature_sizes) != len(self.scales):
            raise ValueError(
                f"MODEL.YOLACT.PRIORS.SCALES has {len(self.scales)} levels but the head "
                f"receives {len(feature_sizes)} feature maps"
            )
        if input_size is None:
            input_size = (self.input_size, self.input_size)
        input_size = (int(input_size[0]), int(input_size[1]))
        key = (tuple(tuple(int(v) for v in s) for s in feature_sizes), str(device), input_size)
        # While tracing (torch.export, torch.compile) the priors become part of the graph and
        # must not be cached: the cache would keep the tracer's tensor for later eager calls.
        tracing = torch.compiler.is_compiling()
        if tracing or key not in self._cache:
            levels = [
                generate_level_priors(size, scales, self.aspect_ratios, input_size, self.square)
                for size, scales in zip(key[0], self.scales)
            ]
            priors = torch.cat(levels).to(device)
            if tracing:
                return priors
            self._cache[key] = priors
        return self._cache[key]
