# Copyright (c) yolact_d2 contributors.
"""
The network input of the aspect-ratio-preserving mode (``MODEL.YOLACT.PRESERVE_ASPECT_RATIO``):
the size an image is resized to, and the size it is padded to.

The longest side becomes S (``MODEL.YOLACT.INPUT_SIZE``); the other side is scaled by the same
factor and rounded to a multiple of :data:`CONTENT_MULTIPLE` (4), then padded (bottom or right)
up to a multiple of :data:`SIZE_DIVISIBILITY` (8). Why these two numbers:

* P3 (stride 8) and the prototypes (twice P3's resolution, stride 4) must tile the padded input
  exactly, so that a P3 prior and a prototype pixel sit where they claim to, in pixels: a side
  that is a multiple of 8 gives P3 exactly side / 8 cells and the prototypes side / 4 pixels.
* The image must end on a prototype pixel boundary, so that the masks of its content are a
  whole number of prototype pixels (side / 4) and are pasted onto the image exactly as in the
  square mode: hence the multiple of 4 (the short side moves by at most 2 pixels: < 0.7% for
  sides of 300 pixels and more).
* P4-P7 (strides 16-128) are computed from P3 by convolutions that round up, and their priors
  are spread evenly over the input, as in the reference at 550 (550 / 128 is not an integer
  either): padding to 128 would cost up to 127 more rows (for a 1280 x 720 frame at S = 550,
  384 instead of 312: 23% more work) for cells that the square mode never had exactly.

A side whose padded length would reach S is resized to S instead (at most 0.8% of stretch at
S = 550), so that no input is ever larger than the square mode's S x S, and a square image gets
exactly the square mode's input.
"""

from typing import Sequence, Tuple

__all__ = [
    "CONTENT_MULTIPLE",
    "SIZE_DIVISIBILITY",
    "aspect_preserving_size",
    "padded_input_size",
    "batch_input_size",
]

CONTENT_MULTIPLE = 4
SIZE_DIVISIBILITY = 8


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def aspect_preserving_size(height: int, width: int, input_size: int) -> Tuple[int, int]:
    """
    The (h, w) an image of (height, width) is resized to: the longest side ``input_size``, the
    other scaled by the same factor, rounded to the nearest multiple of
    :data:`CONTENT_MULTIPLE` (at least one), and ``input_size`` where its padded length would
    reach ``input_size``. Integer arithmetic only (the same in exported graphs).

    Args:
        height, width (int): the image's size.
        input_size (int): S.

    Returns:
        tuple[int, int]: (h, w), each at most S, the longest exactly S.
    """
    longest = max(height, width)

    def side(length: int) -> int:
        if length == longest:
            return input_size
        # round(length * S / longest / 4) * 4, halves rounded up, in integers
        quarters = (2 * length * input_size + 4 * longest) // (8 * longest)
        resized = max(quarters, 1) * CONTENT_MULTIPLE
        return input_size if _ceil_to(resized, SIZE_DIVISIBILITY) >= input_size else resized

    return side(height), side(width)


def padded_input_size(height: int, width: int, input_size: int) -> Tuple[int, int]:
    """
    The network input an image resized to (height, width) by :func:`aspect_preserving_size` is
    padded to: each side S if it is S, else its next multiple of :data:`SIZE_DIVISIBILITY`.

    Returns:
        tuple[int, int]: (H, W).
    """
    return tuple(n if n == input_size else _ceil_to(n, SIZE_DIVISIBILITY) for n in (height, width))


def batch_input_size(sizes: Sequence[Tuple[int, int]], input_size: int) -> Tuple[int, int]:
    """
    The padded input of a batch of images resized to ``sizes``: the largest padded height and
    the largest padded width, as Detectron2's ``ImageList`` pads a batch to its largest member.
    """
    padded = [padded_input_size(h, w, input_size) for h, w in sizes]
    return max(p[0] for p in padded), max(p[1] for p in padded)
