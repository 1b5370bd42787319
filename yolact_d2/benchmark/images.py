# Copyright (c) yolact_d2 contributors.
"""Benchmark inputs: real images from a folder or a registered dataset."""

import numpy as np
import os
from typing import List, Optional

from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image

from yolact_d2.data.datasets import tiny_coco_root

__all__ = [
    "default_image_dir",
    "image_files",
    "dataset_image_files",
    "load_images",
    "resize_images",
]

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def default_image_dir() -> str:
    """tiny_coco's 50 val2017 images."""
    return os.path.join(tiny_coco_root(), "val2017")


def image_files(directory: str, num_images: Optional[int] = None) -> List[str]:
    """
    Args:
        directory (str): a folder of images.
        num_images (int or None): keep the first ``num_images`` in sorted order.

    Returns:
        list[str]: image paths.
    """
    files = sorted(
        os.path.join(directory, f)
        for f in os.listdir(directory)
        if f.lower().endswith(_IMAGE_EXTENSIONS)
    )
    if not files:
        raise FileNotFoundError(f"no images in {directory}")
    return files[:num_images]


def dataset_image_files(dataset_name: str, num_images: Optional[int] = None) -> List[str]:
    """The ``file_name`` of the first ``num_images`` records of a registered dataset."""
    return [d["file_name"] for d in DatasetCatalog.get(dataset_name)[:num_images]]


def load_images(files: List[str]) -> List[np.ndarray]:
    """Reads images as (H, W, 3) uint8 BGR arrays, DefaultPredictor's input."""
    return [read_image(f, format="BGR") for f in files]


def resize_images(images: List[np.ndarray], height: int, width: int) -> List[np.ndarray]:
    """The images resized to (height, width) (OpenCV area interpolation, as a camera's frames)."""
    import cv2

    return [cv2.resize(i, (width, height), interpolation=cv2.INTER_AREA) for i in images]
