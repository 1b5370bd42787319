# Copyright (c) yolact_d2 contributors.
"""
Reading and normalising the images users feed a predictor: any common file (grayscale, RGBA,
palette, 16-bit, CMYK, EXIF-rotated) becomes an (H, W, 3) uint8 BGR array, and a file or array
that cannot be one is a clear :class:`ImageInputError` naming it.
"""

import numpy as np
import os

__all__ = ["ImageInputError", "read_image_bgr", "as_bgr_uint8", "in_input_format", "model_input"]


class ImageInputError(ValueError):
    """An image file or array that cannot be used, with the reason and the input's name."""


def as_bgr_uint8(image, name: str = "image") -> np.ndarray:
    """
    An array as the (H, W, 3) uint8 BGR image ``DefaultPredictor`` expects: (H, W) and
    (H, W, 1) grayscale are repeated to three channels, (H, W, 4) BGRA loses its alpha channel,
    16-bit values are scaled to 8 bits (the high byte).

    Raises:
        ImageInputError: not an array of image shape, empty, or of another dtype.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageInputError(
            f"{name}: expected an (H, W, 3) BGR image (or (H, W) / (H, W, 1) grayscale, "
            f"(H, W, 4) BGRA), got shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageInputError(f"{name}: the image is empty (shape {array.shape})")
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageInputError(f"{name}: expected uint8 (or uint16) pixels, got {array.dtype}")
    return np.ascontiguousarray(array[:, :, :3])


def read_image_bgr(path: str) -> np.ndarray:
    """
    Reads an image file as (H, W, 3) uint8 BGR. Like Detectron2's ``read_image``, the EXIF
    orientation is applied (a photo taken upright comes out upright). Grayscale, palette and
    alpha images become three-channel (alpha is dropped, not composited), CMYK is converted by
    Pillow, 16-bit images keep their high byte.

    Raises:
        ImageInputError: the file is missing, empty, not an image, truncated or corrupt, or
            larger than Pillow's decompression-bomb limit; the message names the file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.isfile(path):
        raise ImageInputError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise ImageInputError(f"{path}: the file is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            image.load()  # decodes everything: truncated or corrupt data raises here
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image).astype(np.int64)
                array = (np.clip(array, 0, 65535) >> 8).astype(np.uint8)
                return as_bgr_uint8(array, path)
            if image.mode != "RGB":
                image = image.convert("RGB")
            return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
    except UnidentifiedImageError:
        raise ImageInputError(f"{path}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ImageInputError(f"{path}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageInputError(f"{path}: truncated or corrupt image ({e})") from None


def in_input_format(bgr, input_format: str, name: str = "image") -> np.ndarray:
    """
    A BGR image (anything :func:`as_bgr_uint8` takes) as an (H, W, 3) uint8 contiguous array in
    ``input_format`` ("RGB" or "BGR") channel order: what an exported graph takes.
    """
    bgr = as_bgr_uint8(bgr, name)
    return np.ascontiguousarray(bgr[:, :, ::-1] if input_format == "RGB" else bgr)


def model_input(bgr, input_format: str, transform=None, name: str = "image") -> dict:
    """
    The one conversion of a BGR image to a Detectron2 model input, as ``DefaultPredictor``
    does it: channels in ``input_format`` order, ``transform`` (a Detectron2 ``Transform``, e.g.
    the test-time resize; None for YOLACT, which resizes inside the model), a (3, H', W')
    float32 tensor, and the original "height" and "width".

    Returns:
        dict: {"image": Tensor, "height": int, "width": int}.
    """
    import torch

    image = in_input_format(bgr, input_format, name)
    height, width = image.shape[:2]
    if transform is not None:
        image = transform.apply_image(image)
    tensor = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
    return {"image": tensor, "height": height, "width": width}
