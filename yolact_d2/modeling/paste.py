# Copyright (c) yolact_d2 contributors.
"""
The paste step of YOLACT's inference, in one place: detections at prototype resolution become
Detectron2 ``Instances`` at the original image size - boxes in integer pixels (the reference's
scaling, ordering, clamping and truncation; zero-area boxes dropped), masks stretched to the
image and thresholded, either densely or, for images whose (D, H, W) masks would not fit in
memory, as :class:`BoxLocalMasks` holding the same pixels.

Used by the model (:meth:`~yolact_d2.modeling.Yolact.postprocess`) and by exported models'
predictors (:class:`~yolact_d2.deploy.ExportedPredictor`), which paste outside the graph.
"""

import numpy as np
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from detectron2.structures import Boxes, Instances

from .mask_assembly import box_crop_bounds

__all__ = [
    "BoxLocalMasks",
    "detections_in_content",
    "detections_in_pixels",
    "paste_instances",
    "upsample_masks",
    "upsample_masks_dense",
    "upsample_masks_in_support",
    "support_blocks",
    "support_path_is_exact",
]

_Block = Tuple[int, int, int, int, np.ndarray]  # i0, j0, height, width, packed bits


def _pixel_boxes(boxes: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
    """Relative XYXY -> integer pixel boxes, as the reference (scale, order, clamp, truncate)."""
    height, width = image_size
    x1, x2 = box_crop_bounds(boxes[:, 0], boxes[:, 2], width, 0)
    y1, y2 = box_crop_bounds(boxes[:, 1], boxes[:, 3], height, 0)
    return torch.stack([x1, y1, x2, y2], dim=1).long()


def detections_in_content(
    assembled: Dict[str, torch.Tensor],
    content_size: Tuple[int, int],
    input_size: Tuple[int, int],
) -> Dict[str, torch.Tensor]:
    """
    Detections of an image that covers only the top-left ``content_size`` of a padded network
    input (the aspect-ratio-preserving mode), as if that part were the whole input: boxes
    relative to the content (the padding's share divided out), masks cropped to the prototype
    pixels the content covers. The content must end on a prototype pixel
    (:mod:`yolact_d2.layers.input_size` makes it so).

    Args:
        assembled (dict): output of
            :func:`~yolact_d2.modeling.postprocessing.assemble_detection_masks`: "boxes" (D, 4)
            relative to the input, "masks" (D, h, w) over the input.
        content_size (tuple[int, int]): (h, w) pixels of the input the image covers.
        input_size (tuple[int, int]): (H, W) of the network input.

    Returns:
        dict: the same keys; "boxes" relative to the content, "masks" (D, h', w').
    """
    (height, width), (in_h, in_w) = content_size, input_size
    masks = assembled["masks"]
    proto_h, proto_w = masks.shape[-2:]
    if (height * proto_h) % in_h or (width * proto_w) % in_w:
        raise ValueError(
            f"an image of {height}x{width} pixels on a {in_h}x{in_w} input does not end on a "
            f"prototype pixel ({proto_h}x{proto_w} prototypes)"
        )
    result = dict(assembled)
    boxes = assembled["boxes"]
    scale = torch.tensor([in_w / width, in_h / height] * 2, dtype=boxes.dtype, device=boxes.device)
    result["boxes"] = boxes * scale
    result["masks"] = masks[:, : height * proto_h // in_h, : width * proto_w // in_w]
    return result


def detections_in_pixels(
    assembled: Dict[str, torch.Tensor], image_size: Tuple[int, int]
) -> Dict[str, torch.Tensor]:
    """
    The detections in the original image's pixels: boxes as integer pixel coordinates (scaled,
    ordered, clamped and truncated as the reference), and the detections whose box has zero
    area dropped, as the reference's COCO output does. Masks stay at prototype resolution.

    Args:
        assembled (dict): output of
            :func:`~yolact_d2.modeling.postprocessing.assemble_detection_masks`.
        image_size (tuple[int, int]): (H, W) of the original image.

    Returns:
        dict: "boxes" (D', 4) int64 pixel XYXY, "scores" (D',), "classes" (D',), "masks"
        (D', h, w) soft masks, "indices" (D',) and "mask_scores" (D',) for YOLACT++.
    """
    pixel_boxes = _pixel_boxes(assembled["boxes"], image_size)
    valid = (pixel_boxes[:, 2] > pixel_boxes[:, 0]) & (pixel_boxes[:, 3] > pixel_boxes[:, 1])
    result = {"boxes": pixel_boxes[valid]}
    for key in ("scores", "classes", "masks", "mask_scores", "indices"):
        if key in assembled:
            result[key] = assembled[key][valid]
    return result


def paste_instances(
    detections: Dict[str, torch.Tensor], image_size: Tuple[int, int], settings
) -> Instances:
    """
    Detectron2 ``Instances`` of :func:`detections_in_pixels`' output, with the masks stretched to
    ``image_size`` and thresholded (:func:`upsample_masks`); when (D, H, W) bool masks would be
    larger than ``settings.max_dense_mask_bytes`` and the exact CPU paste applies,
    ``pred_masks`` is a :class:`BoxLocalMasks` of the same masks.

    Args:
        detections (dict): output of :func:`detections_in_pixels`.
        image_size (tuple[int, int]): (H, W) of the original image.
        settings (PostprocessSettings): ``mask_threshold`` and ``max_dense_mask_bytes``.

    Returns:
        Instances: ``pred_boxes`` (Boxes), ``scores``, ``pred_classes``, ``pred_masks``
        (D, H, W) bool (or :class:`BoxLocalMasks`), and for YOLACT++ ``mask_scores``.
    """
    threshold = settings.mask_threshold
    result = Instances(image_size)
    result.pred_boxes = Boxes(detections["boxes"].float())
    result.scores = detections["scores"]
    result.pred_classes = detections["classes"]
    masks = detections["masks"]
    dense_bytes = masks.shape[0] * image_size[0] * image_size[1]
    if dense_bytes > settings.max_dense_mask_bytes and support_path_is_exact(
        masks, image_size, threshold
    ):
        result.pred_masks = BoxLocalMasks.from_soft_masks(masks, image_size, threshold)
    else:
        result.pred_masks = upsample_masks(masks, image_size, threshold)
    if "mask_scores" in detections:
        result.mask_scores = detections["mask_scores"]
    return result


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
    if support_path_is_exact(masks, image_size, threshold):
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


def support_path_is_exact(masks: torch.Tensor, image_size: Tuple[int, int], threshold: float):
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
    written. Call it only where :func:`support_path_is_exact` holds.

    Args and returns: as :func:`upsample_masks`.
    """
    n = masks.shape[0]
    height, width = image_size
    # numpy's zeros come from calloc: the operating system's zero pages, touched only where a
    # block is written (torch.zeros writes all n * H * W bytes: ~20 ms of page faults for 100
    # masks at 1280 x 720). Same values, same dtype; the support path runs on CPU only.
    result = torch.from_numpy(np.zeros((n, height, width), dtype=bool))
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
    where :func:`support_path_is_exact` holds.
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


class BoxLocalMasks:
    """
    What ``Instances.pred_masks`` holds instead of a (D, H, W) bool tensor when that tensor
    would exceed ``MODEL.YOLACT.TEST.MAX_DENSE_MASK_BYTES`` (100 masks of an 8000 x 8000 image
    are 6 GiB as bool). The same masks, stored as bit-packed blocks (1 bit a pixel) of the
    output region each mask can occupy; they are expanded on access:

    * ``masks[i]`` / iteration: one (H, W) bool tensor (what Detectron2's COCO json writer and
      most loops use), built for that mask only;
    * ``masks[bool tensor | index tensor | list | slice]``: a :class:`BoxLocalMasks` of those
      masks, so that ``instances[instances.scores > t]`` works;
    * ``masks.tensor``, ``np.asarray(masks)``: all of them as (D, H, W) bool (the memory this
      class avoids; Detectron2's ``Visualizer`` does this);
    * ``masks.area()``: pixels per mask, without expanding.
    """

    def __init__(self, blocks: Sequence[Optional[_Block]], image_size: Tuple[int, int]):
        self.blocks: List[Optional[_Block]] = list(blocks)
        self.image_size = (int(image_size[0]), int(image_size[1]))

    @classmethod
    def from_soft_masks(
        cls, masks: torch.Tensor, image_size: Tuple[int, int], threshold: float
    ) -> "BoxLocalMasks":
        """
        Pastes (n, h, w) soft masks exactly as :func:`~yolact_d2.modeling.mask_assembly.
        upsample_masks` does on CPU (same values), keeping only each mask's block.
        """
        blocks: List[Optional[_Block]] = [None] * masks.shape[0]
        for i, i0, j0, block in support_blocks(masks, image_size, threshold):
            array = block.numpy()
            blocks[i] = (i0, j0, array.shape[0], array.shape[1], np.packbits(array, axis=None))
        return cls(blocks, image_size)

    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.image_size))

    @property
    def dtype(self) -> torch.dtype:
        return torch.bool

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def nbytes(self) -> int:
        """Bytes held by the packed blocks."""
        return sum(b[4].nbytes for b in self.blocks if b is not None)

    def to(self, device, *args, **kwargs):
        """Stays on CPU (a device other than CPU gets the dense tensor there)."""
        if torch.device(device).type == "cpu":
            return self
        return self.tensor.to(device, *args, **kwargs)

    def _dense(self, block: Optional[_Block]) -> torch.Tensor:
        mask = torch.zeros(self.image_size, dtype=torch.bool)
        if block is not None:
            i0, j0, h, w, packed = block
            bits = np.unpackbits(packed, count=h * w).reshape(h, w).astype(bool)
            mask[i0 : i0 + h, j0 : j0 + w] = torch.from_numpy(bits)
        return mask

    def __getitem__(self, item):
        if isinstance(item, (int, np.integer)):
            return self._dense(self.blocks[item])
        if isinstance(item, slice):
            return BoxLocalMasks(self.blocks[item], self.image_size)
        index = torch.as_tensor(item)
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise IndexError(f"a mask of {tuple(index.shape)} for {len(self)} masks")
            index = index.nonzero().flatten()
        return BoxLocalMasks([self.blocks[int(i)] for i in index.flatten()], self.image_size)

    def __iter__(self):
        for block in self.blocks:
            yield self._dense(block)

    @property
    def tensor(self) -> torch.Tensor:
        """All masks as one (D, H, W) bool tensor."""
        if not self.blocks:
            return torch.zeros((0, *self.image_size), dtype=torch.bool)
        return torch.stack([self._dense(b) for b in self.blocks])

    def __array__(self, dtype=None, copy=None):
        array = self.tensor.numpy()
        return array if dtype is None else array.astype(dtype)

    def area(self) -> torch.Tensor:
        """(D,) int64 pixels of each mask."""
        counts = [
            0 if b is None else int(np.unpackbits(b[4], count=b[2] * b[3]).sum())
            for b in self.blocks
        ]
        return torch.tensor(counts, dtype=torch.int64)

    def __repr__(self) -> str:
        return (
            f"BoxLocalMasks({len(self)} masks of {self.image_size[0]}x{self.image_size[1]}, "
            f"{self.nbytes / 2**20:.1f} MiB packed)"
        )
