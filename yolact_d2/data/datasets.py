# Copyright (c) yolact_d2 contributors.
"""
Registration of the shared 100-image ``tiny_coco`` set used by tests and smoke runs, and of the
COCO json datasets a config names in ``DATASETS.REGISTER_COCO`` (see :func:`setup_datasets` and
``datasets/README.md``; ``DATASETS.REGISTER_YOLO``'s YOLO-seg datasets: ``yolo_seg``). The COCO
2017 splits are Detectron2's own builtin names (``coco_2017_train``/``coco_2017_val`` under
``$DETECTRON2_DATASETS``).
"""

import json
import logging
import os
from collections import Counter

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

from .config_entries import parse_three_strings
from .yolo_seg import register_yolo_datasets_from_config

__all__ = [
    "tiny_coco_root",
    "register_tiny_coco",
    "register_dataset_subset",
    "read_coco_categories",
    "register_coco_datasets_from_config",
    "resolve_num_classes",
    "setup_datasets",
]

logger = logging.getLogger(__name__)


def tiny_coco_root() -> str:
    """
    The one place that says where tiny_coco is.

    Returns:
        str: ``$YOLACT_D2_TINY_COCO`` if set, else ``tiny_coco`` under Detectron2's dataset root
        ``$DETECTRON2_DATASETS`` (default ``datasets``, relative to the working directory; the
        set-up links ``datasets/tiny_coco`` to the shared copy). The directory holds
        ``annotations/instances_{train,val}2017.json``, ``train2017/`` and ``val2017/``.
    """
    env = os.environ.get("YOLACT_D2_TINY_COCO")
    if env:
        return env
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "tiny_coco")


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


# ------------------------------------------------------------------------------------------
# Datasets named by the config: DATASETS.REGISTER_COCO and MODEL.YOLACT.NUM_CLASSES_FROM_DATA
# ------------------------------------------------------------------------------------------
_REGISTER_KEY = "DATASETS.REGISTER_COCO"
# What Detectron2's loader and COCO evaluation read from each image and annotation.
_IMAGE_KEYS = ("id", "file_name", "height", "width")
_ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox", "segmentation", "area", "iscrowd")
_LITERAL_EXAMPLE = "\"[('my_train', 'data/train.json', 'data/images')]\""


def _load_json(json_file: str):
    """
    Returns:
        the parsed content of ``json_file``; ValueError naming it if it is not JSON.
    """
    try:
        with open(json_file, "rb") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{json_file} is not a JSON file ({e}).") from e


def _check_entries(json_file: str, coco: dict, section: str, keys) -> None:
    """
    Every entry of ``coco[section]`` is an object with ``keys`` and a unique "id"; else a
    ValueError naming the file, the entry and the key.
    """
    seen = set()
    for index, entry in enumerate(coco[section]):
        where = f"{json_file}: {section}[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is a {type(entry).__name__}, not an object.")
        for key in keys:
            if key not in entry:
                raise ValueError(
                    f"{where} (id {entry.get('id')!r}) has no {key!r}; COCO instances {section} "
                    f"need {', '.join(repr(k) for k in keys)}."
                )
        if entry["id"] in seen:
            raise ValueError(f"{where}: duplicate {section[:-1]} id {entry['id']!r}.")
        seen.add(entry["id"])


def _check_categories(json_file: str, categories) -> list:
    """
    Returns:
        list[dict]: ``categories`` sorted by id, after checking that there is at least one, that
        each has an integer "id" and a string "name", and that ids are unique.
    """
    if not categories:
        raise ValueError(f"{json_file}: 'categories' is empty; a COCO json needs its classes.")
    for index, category in enumerate(categories):
        where = f"{json_file}: categories[{index}]"
        if not isinstance(category, dict):
            raise ValueError(f"{where} is a {type(category).__name__}, not an object.")
        category_id = category.get("id")
        if isinstance(category_id, bool) or not isinstance(category_id, int):
            raise ValueError(f"{where} has no integer 'id' (got {category_id!r}).")
        if not isinstance(category.get("name"), str):
            raise ValueError(f"{where} (id {category_id}) has no string 'name'.")
    counts = Counter(c["id"] for c in categories)
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    if duplicates:
        raise ValueError(f"{json_file}: duplicate category ids {duplicates} in 'categories'.")
    return sorted(categories, key=lambda c: c["id"])


def read_coco_categories(json_file: str) -> list:
    """
    Checks that ``json_file`` is a COCO instances json and returns its categories. The whole
    file is parsed (once, at registration); only the categories are kept.

    Checked: the file exists and is JSON; the top level has "images", "annotations" and
    "categories" lists; every category has an integer "id" (unique) and a string "name"; every
    image has "id" (unique), "file_name", "height" and "width"; every annotation has "id"
    (unique), "image_id", "category_id" (one of the categories), "bbox", "segmentation", "area"
    and "iscrowd" (Detectron2's loader and COCO evaluation read them).

    Args:
        json_file (str): path to the json.

    Returns:
        list[dict]: the categories, sorted by id.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: anything else above, naming the file and the key.
    """
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO json file {json_file} does not exist.")
    coco = _load_json(json_file)
    if not isinstance(coco, dict):
        raise ValueError(
            f"{json_file} is not COCO instances format: its top level is a "
            f"{type(coco).__name__}, not an object with 'images', 'annotations', 'categories'."
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            problem = "has no" if key not in coco else "has a non-list"
            raise ValueError(f"{json_file} is not COCO instances format: it {problem} {key!r}.")
    categories = _check_categories(json_file, coco["categories"])
    _check_entries(json_file, coco, "images", _IMAGE_KEYS)
    _check_entries(json_file, coco, "annotations", _ANNOTATION_KEYS)
    known = {c["id"] for c in categories}
    for index, annotation in enumerate(coco["annotations"]):
        if annotation["category_id"] not in known:
            raise ValueError(
                f"{json_file}: annotations[{index}] (id {annotation['id']!r}) has category_id "
                f"{annotation['category_id']!r}, which is not in 'categories' {sorted(known)}."
            )
    return categories


def _parse_register_entry(entry):
    """
    Returns:
        tuple[str, str, str]: name, absolute json file and absolute image root of one
        ``DATASETS.REGISTER_COCO`` entry (relative paths taken from the working directory).
    """
    fields = ("name", "json_file", "image_root")
    name, json_file, image_root = parse_three_strings(
        entry, _REGISTER_KEY, fields, _LITERAL_EXAMPLE
    )
    return name, *(os.path.abspath(os.path.expanduser(p)) for p in (json_file, image_root))


def _is_registered(name: str, json_file: str, image_root: str) -> bool:
    """
    Whether ``name`` is already registered with these files (then registering is a no-op).
    Raises a ValueError naming both sources if it is registered with anything else.
    """
    if name not in DatasetCatalog.list():
        return False
    metadata = MetadataCatalog.get(name)
    old = (metadata.get("json_file"), metadata.get("image_root"))
    if None not in old and tuple(os.path.abspath(p) for p in old) == (json_file, image_root):
        return True
    source = (
        f"json_file={old[0]}, image_root={old[1]}"
        if None not in old
        else "by code, without json_file/image_root metadata (e.g. a builtin or subset)"
    )
    raise ValueError(
        f"{_REGISTER_KEY}: dataset {name!r} is already registered ({source}); it cannot be "
        f"registered again with json_file={json_file}, image_root={image_root}. "
        "Choose another name."
    )


def register_coco_datasets_from_config(cfg) -> list:
    """
    Registers each ``[name, json_file, image_root]`` of ``cfg.DATASETS.REGISTER_COCO`` with
    Detectron2's ``register_coco_instances`` (records are still loaded lazily, on first use)
    and sets its ``thing_classes`` (category names by increasing id) and
    ``thing_dataset_id_to_contiguous_id`` metadata now, from the json's "categories" (as
    ``load_coco_json`` will). The json is validated by :func:`read_coco_categories`, so bad
    data is an error here, before training starts. Relative paths are taken relative to the
    current working directory (``~`` is expanded); the metadata holds absolute paths.

    Registering a name again with the same files is a no-op (``launch()`` workers and tests
    do it repeatedly).

    Args:
        cfg (CfgNode): a config with ``DATASETS.REGISTER_COCO`` (see ``add_yolact_config``).

    Returns:
        list[str]: the names of the entries (registered now or before).

    Raises:
        ValueError: a malformed entry; a name already registered with other files, or by other
            code (builtin datasets, subsets); a json that is not COCO instances format.
        FileNotFoundError: a missing json file or image root.
    """
    names = []
    for entry in cfg.DATASETS.get("REGISTER_COCO", []):
        name, json_file, image_root = _parse_register_entry(entry)
        names.append(name)
        if _is_registered(name, json_file, image_root):
            continue
        where = f"{_REGISTER_KEY} {name!r}"
        if not os.path.isfile(json_file):
            raise FileNotFoundError(f"{where}: json file {json_file} does not exist.")
        if not os.path.isdir(image_root):
            raise FileNotFoundError(f"{where}: image root {image_root} is not a directory.")
        try:
            categories = read_coco_categories(json_file)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
        metadata = {
            "thing_classes": [c["name"] for c in categories],
            "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
        }
        register_coco_instances(name, metadata, json_file, image_root)
        logger.info(
            f"Registered {name}: {len(categories)} classes from {json_file}, images in "
            f"{image_root}."
        )
    return names


def _dataset_classes(cfg) -> list:
    """
    Returns:
        list[tuple[str, list[str]]]: (name, thing_classes) of each dataset of
        ``DATASETS.TRAIN`` then ``DATASETS.TEST`` whose metadata has ``thing_classes``.
    """
    found = []
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        if name in MetadataCatalog.list():
            classes = MetadataCatalog.get(name).get("thing_classes")
            if classes is not None:
                found.append((name, list(classes)))
    return found


def resolve_num_classes(cfg):
    """
    Checks ``MODEL.YOLACT.NUM_CLASSES`` against the datasets of ``DATASETS.TRAIN`` and
    ``DATASETS.TEST`` whose metadata already has ``thing_classes`` (the builtins, tiny_coco,
    the synthetic sets, ``DATASETS.REGISTER_COCO`` and ``REGISTER_YOLO`` datasets; datasets whose
    classes are only known once loaded, or not registered, are not checked). Non-YOLACT configs
    are returned unchanged.

    Args:
        cfg (CfgNode): a YOLACT config, frozen or not.

    Returns:
        CfgNode: ``cfg`` itself if it agrees with the data or no dataset has classes; with
        ``MODEL.YOLACT.NUM_CLASSES_FROM_DATA``, otherwise, a copy (frozen if ``cfg`` was) with
        ``NUM_CLASSES`` set to the data's class count (logged).

    Raises:
        ValueError: the datasets have different classes, or NUM_CLASSES differs from their
            count and NUM_CLASSES_FROM_DATA is off.
    """
    if cfg.MODEL.META_ARCHITECTURE != "Yolact":
        return cfg
    found = _dataset_classes(cfg)
    if not found:
        return cfg
    first_name, first_classes = found[0]
    for name, classes in found[1:]:
        if classes != first_classes:
            index = next(
                (i for i, pair in enumerate(zip(first_classes, classes)) if pair[0] != pair[1]),
                min(len(first_classes), len(classes)),
            )
            raise ValueError(
                f"Datasets {first_name!r} ({len(first_classes)} classes) and {name!r} "
                f"({len(classes)} classes) have different thing_classes (first difference at "
                f"class {index}: {first_classes[index:index + 1]} vs {classes[index:index + 1]});"
                " DATASETS.TRAIN and DATASETS.TEST must share one class list."
            )
    num_classes, configured = len(first_classes), cfg.MODEL.YOLACT.NUM_CLASSES
    if num_classes == configured:
        return cfg
    if not cfg.MODEL.YOLACT.NUM_CLASSES_FROM_DATA:
        raise ValueError(
            f"MODEL.YOLACT.NUM_CLASSES is {configured} but dataset {first_name!r} has "
            f"{num_classes} classes. Set MODEL.YOLACT.NUM_CLASSES {num_classes}, or "
            "MODEL.YOLACT.NUM_CLASSES_FROM_DATA True to take it from the data (or name datasets "
            "with the model's classes in DATASETS.TRAIN/TEST)."
        )
    frozen = cfg.is_frozen()
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.YOLACT.NUM_CLASSES = num_classes
    if frozen:
        cfg.freeze()
    logger.info(
        f"MODEL.YOLACT.NUM_CLASSES_FROM_DATA: MODEL.YOLACT.NUM_CLASSES = {num_classes} "
        f"(was {configured}), the classes of {first_name!r}."
    )
    return cfg


def setup_datasets(cfg):
    """
    What every entry point does with a config before using it: registers
    ``DATASETS.REGISTER_COCO`` (:func:`register_coco_datasets_from_config`) and
    ``DATASETS.REGISTER_YOLO`` (``yolo_seg.register_yolo_datasets_from_config``), then checks
    or sets ``MODEL.YOLACT.NUM_CLASSES`` (:func:`resolve_num_classes`).

    Args:
        cfg (CfgNode): a YOLACT config, frozen or not.

    Returns:
        CfgNode: ``cfg``, or a copy with ``NUM_CLASSES`` from the data; frozen if ``cfg`` was.
    """
    register_coco_datasets_from_config(cfg)
    register_yolo_datasets_from_config(cfg)
    return resolve_num_classes(cfg)


# The 8 images configs/tiny_coco/yolact_R_50_FPN_overfit8.yaml trains and evaluates on, named
# for every tool (train_net.py, the demo, the benchmark) and not only tools/overfit_tiny_coco.py.
TINY_COCO_OVERFIT_SUBSET = register_dataset_subset("tiny_coco_train_first8", "tiny_coco_train", 8)
