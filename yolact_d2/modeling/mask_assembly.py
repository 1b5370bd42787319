# Copyright (c) yolact_d2 contributors.
"""Mask assembly: linear combination of prototypes, cropping, and pasting to image size."""

from typing import Iterator, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "assemble_masks",
    "crop_masks",
    "box_crop_bounds",
    "upsample_masks",
    "upsample_masks_dense",
    "upsample_masks_in_support",
    "support_blocks",
]


def assemble_masks(prototypes: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """
    M = sigmoid(P C^T).

    Args:
        prototypes (Tensor): (k, H, W) prototypes of one image.
        coefficients (Tensor): (n, k) mask coefficients of n instances.

    Returns:
        Tensor: (n, H, W) soft masks in (0, 1).
    """
    k, h, w = prototypes.shape
    return torch.sigmoid(coefficients @ prototypes.reshape(k, h * w)).reshape(-1, h, w)


def box_crop_bounds(
    low: torch.Tensor, high: torch.Tensor, size: int, padding: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    The reference's ``sanitize_coordinates`` without integer casting: relative coordinates to
    ``size`` units, ordered, padded and clamped to [0, size].

    Args:
        low, high (Tensor): (n,) relative coordinates (either may be the larger).
        size (int): the axis length to scale to.
        padding (float): added on both sides before clamping.

    Returns:
        (Tensor, Tensor): (n,) lower and upper bounds.
    """
    low, high = low * size, high * size
    lower = torch.minimum(low, high)
    upper = torch.maximum(low, high)
    return (lower - padding).clamp(min=0), (upper + padding).clamp(max=size)


def crop_masks(masks: torch.Tensor, boxes: torch.Tensor, padding: float = 1) -> torch.Tensor:
    """
    Zeroes every pixel outside each instance's box (the reference's ``crop``): pixel column c
    survives iff x1 <= c < x2 with x1 = max(x1_rel * W - padding, 0) and
    x2 = min(x2_rel * W + padding, W), and likewise for rows.

    Args:
        masks (Tensor): (n, H, W).
        boxes (Tensor): (n, 4) relative XYXY boxes.
        padding (float): pixels added around each box.

    Returns:
        Tensor: (n, H, W) cropped masks.
    """
    n, h, w = masks.shape
    x1, x2 = box_crop_bounds(boxes[:, 0], boxes[:, 2], w, padding)
    y1, y2 = box_crop_bounds(boxes[:, 1], boxes[:, 3], h, padding)
    cols = torch.arange(w, device=masks.device, dtype=x1.dtype)[None, :]
    rows = torch.arange(h, device=masks.device, dtype=y1.dtype)[None, :]
    inside_x = ((cols >= x1[:, None]) & (cols < x2[:, None])).to(masks.dtype)  # (n, W)
    inside_y = ((rows >= y1[:, None]) & (rows < y2[:, None])).to(masks.dtype)  # (n, H)
    # Two broadcast products by exact 0/1 factors: the same values as one product by the 2-D
    # indicator, without materialising it.
    return (masks * inside_y[:, :, None]).mul_(inside_x[:, None, :])


def upsample_masks(
    masks: torch.Tensor, image_size: Tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """
    Stretches prototype-resolution masks to the full image (bilinear, align_corners=False, as
    the input was a non-aspect-preserving square resize) and binarises them (> threshold).

    On CPU the result is computed only where it can be non-zero (see
    :func:`upsample_masks_in_support`), which is bit-identical to :func:`upsample_masks_dense`
    and much cheaper for cropped masks; elsewhere (CUDA, tiny outputs, negative thresholds) the
    dense computation runs.

    Args:
        masks (Tensor): (n, h, w) soft masks.
        image_size (tuple[int, int]): (H, W) of the original image.
        threshold (float): binarisation threshold.

    Returns:
        Tensor: (n, H, W) bool masks.
    """
    if _support_path_is_exact(masks, image_size, threshold):
        return upsample_masks_in_support(masks, image_size, threshold)
    return upsample_masks_dense(masks, image_size, threshold)


def upsample_masks_dense(
    masks: torch.Tensor, image_size: Tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """
    The straightforward :func:`upsample_masks`: one bilinear interpolation of every mask to the
    full image, then a threshold.

    Args and returns: as :func:`upsample_masks`.
    """
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *image_size), dtype=torch.bool)
    up = F.interpolate(masks[None].float(), size=image_size, mode="bilinear", align_corners=False)
    return up[0] > threshold


def _support_path_is_exact(masks: torch.Tensor, image_size: Tuple[int, int], threshold: float):
    """
    Whether :func:`upsample_masks_in_support` reproduces the dense result bit for bit: PyTorch's
    generic CPU bilinear kernel evaluates each output pixel as a linear interpolation along
    the width followed by one along the height, which is what two 1-D ``linear`` passes compute.
    Small outputs (H + W <= 128) and 3-channel single-thread inputs take a vectorised kernel
    instead; CUDA kernels are not covered; with a negative threshold zeros would count as
    foreground.
    """
    return (
        masks.device.type == "cpu"
        and masks.dtype == torch.float32
        and threshold >= 0
        and sum(image_size) > 128
        and not (masks.shape[0] == 3 and torch.get_num_threads() == 1)
    )


def _support_bounds(nonzero: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Args:
        nonzero (Tensor): (n, L) bool.

    Returns:
        (Tensor, Tensor): (n,) int64 first and one-past-last True position; (L, 0) where a row
        has none.
    """
    length = nonzero.shape[1]
    positions = torch.arange(length, device=nonzero.device)
    first = torch.where(nonzero, positions, length).amin(dim=1)
    last = torch.where(nonzero, positions, -1).amax(dim=1)
    return first, last + 1


def _output_span(
    first: torch.Tensor, end: torch.Tensor, in_size: int, out_size: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    A superset of the output indices whose two bilinear source taps can hit the input range
    [first, end).

    Output index j reads source indices floor(s * (j + 0.5) - 0.5) and the next one, with
    s = in_size / out_size, so it touches [first, end) iff j is in about
    [(first - 0.5) / s - 0.5, (end + 0.5) / s - 0.5]; two extra pixels on each side absorb
    rounding. Computing extra outputs is harmless: they are computed exactly.

    Args:
        first, end (Tensor): (n,) int64 input ranges (empty if first >= end).
        in_size, out_size (int): input and output lengths.

    Returns:
        (Tensor, Tensor): (n,) int64 first and one-past-last output index.
    """
    scale = in_size / out_size
    lo = torch.floor((first.double() - 0.5) / scale - 0.5) - 2
    hi = torch.ceil((end.double() + 0.5) / scale - 0.5) + 3
    empty = end <= first
    lo = lo.clamp(0, out_size).long().masked_fill(empty, 0)
    hi = hi.clamp(0, out_size).long().masked_fill(empty, 0)
    return lo, hi


def _linear_resize_rows(rows: torch.Tensor, size: int) -> torch.Tensor:
    """(m, L) -> (m, size): 1-D linear interpolation of each row (align_corners=False)."""
    return F.interpolate(rows[None], size=size, mode="linear", align_corners=False)[0]


def upsample_masks_in_support(
    masks: torch.Tensor, image_size: Tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """
    :func:`upsample_masks` computed only where the result can be non-zero.

    A bilinear output pixel only reads the 2 x 2 input pixels around its source position, so
    after cropping everything far from a mask's box is exactly 0. The interpolation is split
    into PyTorch's own 1-D passes (width, then height), which is exactly how its 2-D CPU
    kernel evaluates a pixel. For each mask, the width pass runs on the input rows spanning
    its non-zero values (other rows stay exactly 0) and the height pass on the output columns
    that can see one; only the output rectangle that can be non-zero is thresholded and
    written. Call it only where :func:`_support_path_is_exact` holds.

    Args and returns: as :func:`upsample_masks`.
    """
    n = masks.shape[0]
    height, width = image_size
    result = torch.zeros((n, height, width), dtype=torch.bool, device=masks.device)
    for i, i0, j0, block in support_blocks(masks, image_size, threshold):
        result[i, i0 : i0 + block.shape[0], j0 : j0 + block.shape[1]] = block
    return result


def support_blocks(
    masks: torch.Tensor, image_size: Tuple[int, int], threshold: float = 0.5
) -> Iterator[Tuple[int, int, int, torch.Tensor]]:
    """
    The computation of :func:`upsample_masks_in_support`, one mask at a time: for every mask
    with a non-zero region, ``(i, i0, j0, block)`` where ``block`` (h', w') bool holds output
    rows ``i0:i0 + h'`` and columns ``j0:j0 + w'``; everything outside is False. Call it only
    where :func:`_support_path_is_exact` holds.
    """
    n, h, w = masks.shape
    height, width = image_size
    nonzero = masks != 0
    row_first, row_end = _support_bounds(nonzero.any(dim=2))
    col_first, col_end = _support_bounds(nonzero.any(dim=1))
    out_row_lo, out_row_hi = _output_span(row_first, row_end, h, height)
    out_col_lo, out_col_hi = _output_span(col_first, col_end, w, width)
    bounds = torch.stack([row_first, row_end, out_row_lo, out_row_hi, out_col_lo, out_col_hi], 1)
    for i, (r0, r1, i0, i1, j0, j1) in enumerate(bounds.tolist()):
        if r1 <= r0 or j1 <= j0 or i1 <= i0:
            continue
        widened = _linear_resize_rows(masks[i, r0:r1], width)[:, j0:j1]  # (r1 - r0, j1 - j0)
        columns = widened.new_zeros((j1 - j0, h))
        columns[:, r0:r1] = widened.t()
        tall = _linear_resize_rows(columns, height)[:, i0:i1]  # (j1 - j0, i1 - i0)
        yield i, i0, j0, tall.t() > threshold
