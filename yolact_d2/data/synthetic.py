# Copyright (c) yolact_d2 contributors.
"""
A synthetic instance-segmentation dataset that the project generates itself.

Each image has a textured background (gradient, stripes or blotches, plus noise) and 1 to
``max_instances`` shapes of the classes :data:`SYNTHETIC_CLASSES`, each with a random colour and
size. Later shapes cover earlier ones: masks are the visible parts, and instances whose visible
area is below ``min_visible_area`` pixels are dropped (their few visible pixels stay in the
image, unlabelled). Everything is a function of the seed and the image index.

A split is written as COCO json (RLE masks) plus JPEG files, on first use, into a temporary
directory that is then renamed into place, and written again when missing, incomplete or made
with other parameters. ``yolact_synthetic_train`` (400 images) and ``yolact_synthetic_val``
(50 images) are registered at import, under :func:`synthetic_root`.
"""

import json
import numpy as np
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass

import cv2
import pycocotools.mask as mask_util

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

__all__ = [
    "SYNTHETIC_CLASSES",
    "SyntheticSpec",
    "synthetic_root",
    "render_synthetic_image",
    "write_synthetic_split",
    "ensure_synthetic_split",
    "register_synthetic_split",
    "register_all_synthetic",
]

SYNTHETIC_CLASSES = ("circle", "square", "triangle", "star")
# Bump when the rendering changes, so that splits on disk are regenerated.
GENERATOR_VERSION = 1
_JSON_NAME = "annotations.json"
_IMAGE_DIR = "images"
# Vertex radii (relative to the shape size), repeated around the centre; None is a disc.
_SHAPE_RADII = {
    "circle": None,
    "square": (1.0,) * 4,
    "triangle": (1.0,) * 3,
    "star": (1.0, 0.45) * 5,
}


@dataclass(frozen=True)
class SyntheticSpec:
    """
    Everything a split depends on.

    Attributes:
        num_images (int): images in the split.
        seed (int): image ``i`` is drawn from ``np.random.default_rng([seed, i])``.
        image_size (int): side of the square images (the longest side of the others).
        max_instances (int): at most this many shapes are drawn per image.
        min_visible_area (int): instances with fewer visible pixels are dropped.
        layout (str): "square", or "wide_tall": even images 16:9 (landscape), odd ones 9:16
            (portrait), the shapes as large in pixels as in the square images.
    """

    num_images: int
    seed: int
    image_size: int = 160
    max_instances: int = 6
    min_visible_area: int = 40
    layout: str = "square"

    def __post_init__(self):
        if self.layout not in ("square", "wide_tall"):
            raise ValueError(f"layout must be 'square' or 'wide_tall', got {self.layout!r}")

    def image_shape(self, index: int):
        """(height, width) of image ``index``."""
        side, short = self.image_size, self.image_size * 9 // 16
        if self.layout == "square":
            return side, side
        return (short, side) if index % 2 == 0 else (side, short)

    def info(self):
        """
        dict: the json "info" entry, which identifies the split on disk.
        """
        info = asdict(self)
        if self.layout == "square":  # the square splits keep the info they always had
            del info["layout"]
        return {"generator": __name__, "version": GENERATOR_VERSION, **info}


# Registered at import: name -> (sub-directory of synthetic_root(), spec).
_SPLITS = {
    "yolact_synthetic_train": ("train", SyntheticSpec(num_images=400, seed=0)),
    "yolact_synthetic_val": ("val", SyntheticSpec(num_images=50, seed=1)),
    # Landscape and portrait images (MODEL.YOLACT.PRESERVE_ASPECT_RATIO, docs/BENCHMARKS.md).
    "yolact_synthetic_wide_tall_train": (
        "wide_tall_train",
        SyntheticSpec(num_images=400, seed=2, layout="wide_tall"),
    ),
    "yolact_synthetic_wide_tall_val": (
        "wide_tall_val",
        SyntheticSpec(num_images=50, seed=3, layout="wide_tall"),
    ),
}


def synthetic_root() -> str:
    """
    Returns:
        str: ``$YOLACT_D2_DATASETS/yolact_synthetic``, ``$YOLACT_D2_DATASETS`` defaulting to
        ``datasets`` (relative to the working directory, like ``$DETECTRON2_DATASETS``).
    """
    root = os.path.expanduser(os.environ.get("YOLACT_D2_DATASETS", "datasets"))
    return os.path.join(root, "yolact_synthetic")


def _background(rng, size, shape):
    """
    Args:
        size (int): the scale of the patterns (the longest side).
        shape (tuple[int, int]): (height, width).

    Returns:
        ndarray: (height, width, 3) float32 RGB, roughly in [0, 255].
    """
    height, width = shape
    low, high = rng.uniform(0, 255, size=(2, 3))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    kind = rng.integers(3)
    if kind == 0:  # linear gradient
        t = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    elif kind == 1:  # stripes
        t = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 10) * ramp)
    else:  # smooth blotches
        cells = int(rng.integers(3, 9))
        coarse = rng.uniform(0, 1, size=(cells, cells)).astype(np.float32)
        t = np.clip(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)
    image = low + t[..., None] * (high - low) + rng.normal(0, 10, size=(height, width, 3))
    return image.astype(np.float32)


def _shape_mask(rng, shape, size, image_shape):
    """
    Draw one shape of random size (relative to ``size``), position and rotation.

    Returns:
        ndarray: (height, width) bool mask of ``image_shape``.
    """
    height, width = image_shape
    radius = rng.uniform(0.08, 0.22) * size
    centre = rng.uniform(0.1, 0.9, size=2) * np.array([width, height])
    mask = np.zeros((height, width), np.uint8)
    radii = _SHAPE_RADII[shape]
    shift = 4  # sub-pixel vertex precision for OpenCV
    if radii is None:
        centre_fixed = tuple(int(v) for v in np.rint(centre * 2**shift))
        cv2.circle(mask, centre_fixed, int(radius * 2**shift), 1, -1, cv2.LINE_8, shift)
    else:
        angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(len(radii)) / len(radii)
        vertices = centre + radius * np.asarray(radii)[:, None] * np.stack(
            [np.cos(angles), np.sin(angles)], axis=1
        )
        cv2.fillPoly(mask, [np.rint(vertices * 2**shift).astype(np.int32)], 1, cv2.LINE_8, shift)
    return mask.astype(bool)


def _shape_colour(rng, background_colour):
    """
    A random colour, redrawn (a few times) while too close to ``background_colour``.

    Returns:
        ndarray: (3,) float RGB.
    """
    for _ in range(20):
        colour = rng.uniform(0, 255, size=3)
        if np.abs(colour - background_colour).sum() >= 120:
            break
    return colour


def render_synthetic_image(rng, spec: SyntheticSpec, index: int = 0):
    """
    Render one image.

    Args:
        rng (np.random.Generator): the only source of randomness.
        spec (SyntheticSpec): image size, instance count and visibility limits.
        index (int): the image's index in the split (its shape, for ``layout`` "wide_tall").

    Returns:
        tuple[ndarray, list[tuple[int, ndarray]]]: the (H, W, 3) uint8 RGB image and its
        instances in drawing order as (class index into SYNTHETIC_CLASSES, (H, W) bool visible
        mask), at least one.
    """
    size = spec.image_size
    shape = spec.image_shape(index)
    for _ in range(10):
        image = _background(rng, size, shape)
        drawn = []
        for _ in range(int(rng.integers(1, spec.max_instances + 1))):
            class_id = int(rng.integers(len(SYNTHETIC_CLASSES)))
            mask = _shape_mask(rng, SYNTHETIC_CLASSES[class_id], size, shape)
            colour = _shape_colour(rng, image[mask].mean(axis=0))
            image[mask] = colour + rng.normal(0, 6, size=(int(mask.sum()), 3))
            for _, earlier in drawn:
                earlier &= ~mask
            drawn.append((class_id, mask))
        instances = [(c, m) for c, m in drawn if m.sum() >= spec.min_visible_area]
        if instances:
            return np.clip(np.rint(image), 0, 255).astype(np.uint8), instances
    raise ValueError(f"No instance reaches min_visible_area={spec.min_visible_area}: {spec}")


def _mask_annotation(mask, class_id, image_id, annotation_id):
    """
    Returns:
        dict: a COCO annotation with the tight XYWH bbox, pixel area and compressed RLE of
        ``mask``, and ``category_id = class_id + 1``.
    """
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": class_id + 1,
        "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
        "area": int(mask.sum()),
        "iscrowd": 0,
        "segmentation": {"size": list(mask.shape), "counts": rle["counts"].decode("ascii")},
    }


def write_synthetic_split(directory, spec: SyntheticSpec):
    """
    Render a split and write ``annotations.json`` and ``images/*.jpg`` into ``directory``.

    Args:
        directory (str): created if needed; existing files of the same names are overwritten.
        spec (SyntheticSpec): what to render.
    """
    os.makedirs(os.path.join(directory, _IMAGE_DIR), exist_ok=True)
    images, annotations = [], []
    for index in range(spec.num_images):
        rng = np.random.default_rng([spec.seed, index])
        image, instances = render_synthetic_image(rng, spec, index)
        file_name = f"{index:06d}.jpg"
        path = os.path.join(directory, _IMAGE_DIR, file_name)
        if not cv2.imwrite(path, image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f"Cannot write {path}")
        image_id = index + 1
        height, width = spec.image_shape(index)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for class_id, mask in instances:
            annotations.append(_mask_annotation(mask, class_id, image_id, len(annotations) + 1))
    categories = [
        {"id": i + 1, "name": name, "supercategory": "shape"}
        for i, name in enumerate(SYNTHETIC_CLASSES)
    ]
    coco = {
        "info": spec.info(),
        "licenses": [],
        "categories": categories,
        "images": images,
        "annotations": annotations,
    }
    with open(os.path.join(directory, _JSON_NAME), "w") as f:
        json.dump(coco, f)


def _is_complete(directory, spec: SyntheticSpec):
    """
    Whether ``directory`` holds the split of ``spec``: its json has ``spec.info()`` and every
    image file it lists exists.
    """
    try:
        with open(os.path.join(directory, _JSON_NAME)) as f:
            coco = json.load(f)
        present = set(os.listdir(os.path.join(directory, _IMAGE_DIR)))
    except (OSError, ValueError):
        return False
    return coco.get("info") == spec.info() and all(
        image["file_name"] in present for image in coco["images"]
    )


def _move_into_place(new_dir, directory, spec):
    """
    Rename ``new_dir`` to ``directory``, first moving away a stale ``directory``. If another
    process put a complete split there meanwhile, keep that one.
    """
    parent = os.path.dirname(os.path.abspath(directory))
    stale = tempfile.mkdtemp(prefix=".stale_", dir=parent)
    try:
        if os.path.exists(directory):
            os.rename(directory, os.path.join(stale, "old"))
        os.rename(new_dir, directory)
    except OSError:
        if not _is_complete(directory, spec):
            raise
    finally:
        shutil.rmtree(stale, ignore_errors=True)


def ensure_synthetic_split(directory, spec: SyntheticSpec):
    """
    Generate the split into ``directory`` unless it is already there and complete. Generation
    writes into a temporary directory next to it, then renames it into place.

    Returns:
        tuple[str, str]: the json file and the image directory.
    """
    if not _is_complete(directory, spec):
        parent = os.path.dirname(os.path.abspath(directory))
        os.makedirs(parent, exist_ok=True)
        work = tempfile.mkdtemp(prefix=".tmp_", dir=parent)
        try:
            write_synthetic_split(os.path.join(work, "split"), spec)
            _move_into_place(os.path.join(work, "split"), directory, spec)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return os.path.join(directory, _JSON_NAME), os.path.join(directory, _IMAGE_DIR)


def register_synthetic_split(name, directory, spec: SyntheticSpec):
    """
    Register a synthetic split as a COCO instances dataset (like
    :func:`register_coco_instances`, with ``json_file``, ``image_root``, ``evaluator_type`` and
    ``thing_classes`` metadata). Nothing is generated now: the split is generated (if needed)
    the first time the dataset is loaded from the :class:`DatasetCatalog`.

    Args:
        name (str): dataset name; skipped if already registered.
        directory (str): where the split lives.
        spec (SyntheticSpec): what it holds.
    """
    if name in DatasetCatalog.list():
        return
    json_file, image_root = os.path.join(directory, _JSON_NAME), os.path.join(directory, _IMAGE_DIR)

    def load():
        ensure_synthetic_split(directory, spec)
        return load_coco_json(json_file, image_root, name)

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        thing_classes=list(SYNTHETIC_CLASSES),
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SYNTHETIC_CLASSES))},
    )


def register_all_synthetic(root=None):
    """
    Register ``yolact_synthetic_train`` (400 images, seed 0) and ``yolact_synthetic_val``
    (50 images, seed 1) under ``root`` (default :func:`synthetic_root`).
    """
    root = root or synthetic_root()
    for name, (subdir, spec) in _SPLITS.items():
        register_synthetic_split(name, os.path.join(root, subdir), spec)


register_all_synthetic()
