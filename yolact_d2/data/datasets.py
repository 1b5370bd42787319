# Copyright (c) yolact_d2 contributors.
"""
Registration of the COCO 2017 splits (under ``$DETECTRON2_DATASETS``, as Detectron2 users
expect) and of the shared 100-image ``tiny_coco`` set used by tests and smoke runs.
"""

import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

__all__ = ["tiny_coco_root", "register_tiny_coco", "register_coco_2017", "register_dataset_subset"]

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Detectron2's layout under $DETECTRON2_DATASETS: name -> (image dir, annotation json).
_COCO_2017_SPLITS = {
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
}


def tiny_coco_root() -> str:
    """
    The one place that says where tiny_coco is.

    Returns:
        str: ``$YOLACT_D2_TINY_COCO`` if set, else ``<repo root>/../shared/datasets/tiny_coco``.
        The directory holds ``annotations/instances_{train,val}2017.json``, ``train2017/`` and
        ``val2017/``.
    """
    env = os.environ.get("YOLACT_D2_TINY_COCO")
    if env:
        return env
    return os.path.normpath(os.path.join(_REPO_ROOT, "..", "shared", "datasets", "tiny_coco"))


def _register_missing(splits, root):
    """
    Register each COCO-format split of ``splits`` (name -> (image dir, json), relative to
    ``root``) that is not registered yet, with the COCO metadata (80 classes).
    """
    for name, (image_dir, json_file) in splits.items():
        if name in DatasetCatalog.list():
            continue
        register_coco_instances(
            name,
            _get_builtin_metadata("coco"),
            os.path.join(root, json_file),
            os.path.join(root, image_dir),
        )


def register_coco_2017(root=None):
    """
    Register ``coco_2017_train`` and ``coco_2017_val`` unless already registered. Importing
    ``detectron2.data`` registers them (``detectron2.data.datasets.builtin``), so this only
    fills a gap if that registration was skipped.

    Args:
        root (str or None): defaults to ``$DETECTRON2_DATASETS`` or ``datasets``.
    """
    root = os.path.expanduser(root or os.getenv("DETECTRON2_DATASETS", "datasets"))
    _register_missing(_COCO_2017_SPLITS, root)


def register_tiny_coco(root=None):
    """
    Register ``tiny_coco_train`` and ``tiny_coco_val`` (COCO 2017 images and annotations, 80
    classes with the COCO id mapping) unless already registered. Loading is lazy.

    Args:
        root (str or None): defaults to :func:`tiny_coco_root`.
    """
    root = root or tiny_coco_root()
    splits = {
        f"tiny_coco_{split}": (f"{split}2017", f"annotations/instances_{split}2017.json")
        for split in ("train", "val")
    }
    _register_missing(splits, root)


register_coco_2017()
register_tiny_coco()


def register_dataset_subset(name: str, source: str, num_images: int) -> str:
    """
    Registers (once) the first ``num_images`` records of the registered dataset ``source``, in
    its order (for COCO json datasets: increasing image id), as the dataset ``name``.

    The subset has the source's metadata except ``json_file``: COCOEvaluator then builds its
    ground truth from the subset's own records. With the source's json it would score the subset
    against every image of the source, counting the objects of the images left out as missed.

    Args:
        name (str): the subset's name.
        source (str): a registered dataset.
        num_images (int): how many records to keep (at least 1).

    Returns:
        str: ``name``.
    """
    if num_images < 1:
        raise ValueError(f"A subset of {source} needs at least one image, got {num_images}.")
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: DatasetCatalog.get(source)[:num_images])
        metadata = MetadataCatalog.get(source).as_dict()
        for key in ("name", "json_file"):
            metadata.pop(key, None)
        MetadataCatalog.get(name).set(**metadata)
    return name
