# Copyright (c) yolact_d2 contributors.
"""
Inputs for the documented commands, made on the user's machine (nothing to download): a few
photos that ship with scikit-image, a short video panning over one of them, and a small
two-class COCO-json dataset in the layout of ``datasets/README.md``'s own-data walk-through.
``tools/example_data.py`` writes them all.
"""

import json
import numpy as np
import os
import tempfile
from typing import Dict, List, Tuple

import cv2

__all__ = [
    "EXAMPLE_PHOTOS",
    "SHAPE_CLASSES",
    "write_example_images",
    "write_example_video",
    "write_shapes_split",
    "write_shapes_dataset",
]

# file name -> scikit-image loader (RGB uint8); the objects are COCO classes
EXAMPLE_PHOTOS = {
    "astronaut.jpg": "astronaut",  # person, flag
    "cat.jpg": "chelsea",  # cat
    "coffee.jpg": "coffee",  # cup, spoon, dining table
    "motorcycle.jpg": "stereo_motorcycle",  # motorcycle (left view of the stereo pair)
    "rocket.jpg": "rocket",  # a launch pad: few or no COCO objects
}

# category id -> name of the two-class shapes dataset
SHAPE_CLASSES = {1: "square", 2: "circle"}


def _photo(loader: str) -> np.ndarray:
    """A scikit-image photo as an (H, W, 3) uint8 BGR array."""
    import skimage.data

    image = getattr(skimage.data, loader)()
    if isinstance(image, tuple):  # the stereo pair
        image = image[0]
    return np.ascontiguousarray(image[:, :, ::-1])


def _write_image_atomically(path: str, image: np.ndarray) -> None:
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(name)[1]
    handle, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=directory)
    os.close(handle)
    try:
        if not cv2.imwrite(partial, image):
            raise OSError(f"OpenCV could not write {path!r}")
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def write_example_images(directory: str) -> List[str]:
    """
    Writes the photos of :data:`EXAMPLE_PHOTOS` into ``directory`` as JPEG files.

    Returns:
        list[str]: the files written, in name order.
    """
    paths = []
    for name, loader in sorted(EXAMPLE_PHOTOS.items()):
        path = os.path.join(directory, name)
        _write_image_atomically(path, _photo(loader))
        paths.append(path)
    return paths


def write_example_video(
    path: str, num_frames: int = 36, fps: float = 12.0, size: Tuple[int, int] = (480, 320)
) -> str:
    """
    Writes an mp4 (OpenCV's ``mp4v``) of a window panning across the motorcycle photo, then
    across the astronaut: a moving camera over real objects, for the demo's video mode.

    Args:
        path: the ``.mp4`` file to write (written under a temporary name, then renamed).
        num_frames: frames in all (half per photo).
        fps: frame rate stored in the file.
        size: (width, height) of the frames.

    Returns:
        str: ``path``.
    """
    width, height = size
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    partial = os.path.join(directory, f".{name}.partial.mp4")
    writer = cv2.VideoWriter(partial, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write an mp4 video at {path!r}")
    try:
        per_photo = max(num_frames // 2, 1)
        for loader in ("stereo_motorcycle", "astronaut"):
            photo = _photo(loader)
            # scale so that the window covers the photo's height, then pan left to right
            scale = height / photo.shape[0]
            photo = cv2.resize(photo, (max(round(photo.shape[1] * scale), width), height))
            travel = photo.shape[1] - width
            for index in range(per_photo):
                x = round(travel * index / max(per_photo - 1, 1))
                writer.write(np.ascontiguousarray(photo[:, x : x + width]))
        writer.release()
        os.replace(partial, path)
    finally:
        writer.release()
        if os.path.exists(partial):
            os.remove(partial)
    return path


def _shape(rng: np.random.Generator, size: int, name: str) -> Tuple[np.ndarray, List[float]]:
    """A filled square or circle inside a (size, size) image: (uint8 mask, flat polygon)."""
    mask = np.zeros((size, size), np.uint8)
    cx, cy = (int(v) for v in rng.integers(size // 4, 3 * size // 4, size=2))
    r = int(rng.integers(size // 8, size // 4))
    if name == "square":
        points = np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r], [cx - r, cy + r]])
    else:
        points = cv2.ellipse2Poly((cx, cy), (r, r), 0, 0, 360, 20)
    cv2.fillPoly(mask, [points.astype(np.int32)], 1)
    return mask, [float(v) for v in points.reshape(-1)]


def write_shapes_split(
    root: str,
    split: str,
    num_images: int,
    seed: int,
    size: int = 96,
    classes: Dict[int, str] = SHAPE_CLASSES,
) -> str:
    """
    Writes ``root/<split>/NNNNNN.jpg`` and ``root/annotations/instances_<split>.json``: one
    shape on even images, two on odd ones, squares and circles alternating, polygon
    segmentations, image ids from 1.

    Args:
        root: the dataset folder.
        split: "train", "val", ...
        num_images: images to write.
        seed: the random seed (same seed, same files).
        size: the images' side in pixels.
        classes: category id -> "square" or "circle" (two entries).

    Returns:
        str: the json file.
    """
    rng = np.random.default_rng(seed)
    image_dir = os.path.join(root, split)
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    ids = sorted(classes)
    for index in range(num_images):
        image = np.full((size, size, 3), rng.integers(0, 80, size=3), np.uint8)
        file_name = f"{index:06d}.jpg"
        images.append({"id": index + 1, "file_name": file_name, "height": size, "width": size})
        for k in range(1 + index % 2):
            category_id = ids[(index + k) % 2]
            mask, polygon = _shape(rng, size, classes[category_id])
            image[mask.astype(bool)] = rng.integers(150, 256, size=3)
            ys, xs = np.nonzero(mask)
            x0, y0 = float(xs.min()), float(ys.min())
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": category_id,
                    "bbox": [x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0],
                    "area": float(mask.sum()),
                    "iscrowd": 0,
                    "segmentation": [polygon],
                }
            )
        _write_image_atomically(os.path.join(image_dir, file_name), image)
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in classes.items()],
    }
    json_file = os.path.join(root, "annotations", f"instances_{split}.json")
    os.makedirs(os.path.dirname(json_file), exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=".instances.", dir=os.path.dirname(json_file))
    with os.fdopen(handle, "w") as f:
        json.dump(coco, f)
    os.replace(partial, json_file)
    return json_file


def write_shapes_dataset(root: str, num_train: int = 32, num_val: int = 8) -> Dict[str, str]:
    """
    The own-data walk-through's dataset (``datasets/README.md``): ``root/annotations/
    instances_{train,val}.json``, ``root/train/``, ``root/val/``; classes square (id 1) and
    circle (id 2).

    Returns:
        dict: split -> json file.
    """
    return {
        "train": write_shapes_split(root, "train", num_train, seed=0),
        "val": write_shapes_split(root, "val", num_val, seed=1),
    }
