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
from typing import Dict, Iterator, List, Tuple

import cv2

__all__ = [
    "EXAMPLE_PHOTOS",
    "SHAPE_CLASSES",
    "write_example_images",
    "write_example_video",
    "write_shapes_split",
    "write_shapes_dataset",
    "write_shapes_yolo_split",
    "write_shapes_yolo_dataset",
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


def _shape_images(
    num_images: int, seed: int, size: int, classes: Dict[int, str]
) -> Iterator[Tuple[str, np.ndarray, List[Tuple[int, np.ndarray, List[float]]]]]:
    """
    The images of a shapes split: one shape on even images, two on odd ones, the classes of
    ``classes`` (sorted by id) alternating.

    Yields:
        (file name, (size, size, 3) uint8 BGR image, [(category id, uint8 mask, flat polygon in
        pixels), ...]) per image.
    """
    rng = np.random.default_rng(seed)
    ids = sorted(classes)
    for index in range(num_images):
        image = np.full((size, size, 3), rng.integers(0, 80, size=3), np.uint8)
        shapes = []
        for k in range(1 + index % 2):
            category_id = ids[(index + k) % 2]
            mask, polygon = _shape(rng, size, classes[category_id])
            image[mask.astype(bool)] = rng.integers(150, 256, size=3)
            shapes.append((category_id, mask, polygon))
        yield f"{index:06d}.jpg", image, shapes


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
    image_dir = os.path.join(root, split)
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for index, (file_name, image, shapes) in enumerate(
        _shape_images(num_images, seed, size, classes)
    ):
        images.append({"id": index + 1, "file_name": file_name, "height": size, "width": size})
        for category_id, mask, polygon in shapes:
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
    _write_text_atomically(json_file, json.dumps(coco))
    return json_file


def _write_text_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    with os.fdopen(handle, "w") as f:
        f.write(text)
    os.replace(partial, path)


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


def write_shapes_yolo_split(
    root: str,
    split: str,
    num_images: int,
    seed: int,
    size: int = 96,
    classes: Dict[int, str] = SHAPE_CLASSES,
) -> str:
    """
    The images of :func:`write_shapes_split` (same arguments, same pixels) in Ultralytics'
    YOLO-seg layout: ``root/images/<split>/NNNNNN.jpg`` and ``root/labels/<split>/NNNNNN.txt``,
    one line ``class x1 y1 ... xn yn`` per shape, class the index of its id in sorted
    ``classes``, coordinates divided by the image's size.

    Returns:
        str: the split's image folder.
    """
    image_dir = os.path.join(root, "images", split)
    label_dir = os.path.join(root, "labels", split)
    os.makedirs(image_dir, exist_ok=True)
    index_of = {category_id: i for i, category_id in enumerate(sorted(classes))}
    for file_name, image, shapes in _shape_images(num_images, seed, size, classes):
        lines = []
        for category_id, _, polygon in shapes:
            coordinates = " ".join(f"{v / size:.6f}" for v in polygon)
            lines.append(f"{index_of[category_id]} {coordinates}\n")
        stem = os.path.splitext(file_name)[0]
        _write_text_atomically(os.path.join(label_dir, f"{stem}.txt"), "".join(lines))
        _write_image_atomically(os.path.join(image_dir, file_name), image)
    return image_dir


def write_shapes_yolo_dataset(root: str, num_train: int = 32, num_val: int = 8) -> str:
    """
    The YOLO-seg walk-through's dataset (``datasets/README.md``): the images and shapes of
    :func:`write_shapes_dataset` in Ultralytics' layout, ``root/data.yaml`` (``path: .``,
    ``train: images/train``, ``val: images/val``, ``names`` 0: square, 1: circle),
    ``root/images/{train,val}/`` and ``root/labels/{train,val}/``.

    Returns:
        str: the data.yaml file.
    """
    write_shapes_yolo_split(root, "train", num_train, seed=0)
    write_shapes_yolo_split(root, "val", num_val, seed=1)
    names = "".join(
        f"  {i}: {n}\n" for i, n in enumerate(SHAPE_CLASSES[c] for c in sorted(SHAPE_CLASSES))
    )
    data_yaml = os.path.join(root, "data.yaml")
    _write_text_atomically(
        data_yaml,
        "# datasets/my_shapes's shapes in Ultralytics YOLO-seg layout (tools/example_data.py)\n"
        f"path: .\ntrain: images/train\nval: images/val\nnames:\n{names}",
    )
    return data_yaml
