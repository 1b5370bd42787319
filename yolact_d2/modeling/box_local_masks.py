# Copyright (c) yolact_d2 contributors.
"""
Full-image instance masks kept small: each mask stored as a bit-packed block around its
non-zero region, for images where (D, H, W) bool masks would not fit in memory.
"""

import numpy as np
from typing import List, Optional, Sequence, Tuple

import torch

from .mask_assembly import support_blocks

__all__ = ["BoxLocalMasks"]

_Block = Tuple[int, int, int, int, np.ndarray]  # i0, j0, height, width, packed bits


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
