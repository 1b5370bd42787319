# Copyright (c) yolact_d2 contributors.
"""
Ultralytics YOLO-seg datasets, registered from the config (``DATASETS.REGISTER_YOLO``) as
Detectron2 datasets: no conversion to COCO json (see ``datasets/README.md``).

The layout read is Ultralytics' (also what Roboflow, CVAT and Label Studio export)::

    my_data/
      data.yaml            # path: ., train: images/train, val: images/val, names: [...]
      images/train/a.jpg   # any folder depth below the split's folder
      labels/train/a.txt   # one object per line: class x1 y1 x2 y2 ... xn yn (normalised)

``data.yaml``: ``path`` is the dataset root (relative paths are relative to the yaml's folder;
without ``path``, the yaml's folder); each split (``train``, ``val``, ``test`` or any other key)
is a folder of images, a ``.txt`` file listing image paths (relative ones relative to the list's
folder) or a list of those, relative to ``path``; a split written ``../x`` that does not exist is
read as ``x``, as Ultralytics does for Roboflow's exports; ``names`` is a list of class names or a
mapping from class index (0..C-1) to name. The label file of ``.../images/<split>/a.jpg`` is
``.../labels/<split>/a.txt`` (the last ``images`` folder of the path becomes ``labels``); an image
without a label file, or with an empty one, has no objects.

Each line is one instance: a polygon of at least 3 points in coordinates normalised to the image
(EXIF orientation applied, as the images are read). An object in several parts is one line whose
polygon joins the parts (Ultralytics' converters join them with zero-width bridges); two lines are
two instances. YOLO-seg has no crowd regions: every instance has ``iscrowd`` 0.
"""

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .config_entries import parse_three_strings

__all__ = [
    "COORDINATE_TOLERANCE",
    "IMAGE_EXTENSIONS",
    "YoloDataYaml",
    "YoloSegSplit",
    "read_yolo_data_yaml",
    "yolo_label_path",
    "read_yolo_seg_split",
    "load_yolo_seg_split",
    "register_yolo_seg",
    "register_yolo_datasets_from_config",
]

logger = logging.getLogger(__name__)

# Normalised coordinates this far outside [0, 1] are clamped to it; farther ones are bad data.
COORDINATE_TOLERANCE = 1e-3
# The files of a split folder that are images (Ultralytics' formats that Pillow reads).
IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")

_REGISTER_KEY = "DATASETS.REGISTER_YOLO"
_LITERAL_EXAMPLE = "\"[('my_train', 'data/data.yaml', 'train')]\""
# Keys of data.yaml that are not splits.
_NOT_SPLITS = ("path", "names", "nc", "download", "yaml_file", "channels")
_POLICIES = ("skip", "error")

# Kinds of bad data, the keys of YoloSegSplit.skipped (a line: the instance is dropped; an image:
# the image is dropped).
BAD_VALUE = "label line with a value that is not a number"
ODD_COORDINATES = "label line with an odd number of coordinates"
FEW_POINTS = "label line with fewer than 3 points"
OUTSIDE = "label line with coordinates outside [0, 1]"
ZERO_AREA = "label line whose polygon has zero area"
UNREADABLE_LABELS = "image whose label file cannot be read"
UNREADABLE_IMAGE = "unreadable image"


class _BadData(Exception):
    """One problem of the data: its kind (a key above) and the message naming the file."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


# ------------------------------------------------------------------------------------------
# data.yaml
# ------------------------------------------------------------------------------------------
@dataclass
class YoloDataYaml:
    """
    A parsed ``data.yaml``.

    Attributes:
        file (str): the yaml, absolute.
        root (str): the dataset root (``path``), absolute.
        names (list[str]): the class names, by class index.
        splits (dict): split -> its value in the yaml (a path or a list of paths).
    """

    file: str
    root: str
    names: List[str]
    splits: Dict[str, object] = field(default_factory=dict)

    def split_sources(self, split: str) -> List[str]:
        """
        The folders and ``.txt`` lists of ``split``, absolute, each checked to exist.

        Raises:
            ValueError: the yaml has no such split, or a source is not a path.
            FileNotFoundError: a source does not exist.
        """
        value = self.splits.get(split)
        if not value:
            available = ", ".join(repr(s) for s in self.splits if self.splits[s]) or "none"
            raise ValueError(f"{self.file} has no {split!r} split (its splits: {available}).")
        values = value if isinstance(value, list) else [value]
        sources = []
        for entry in values:
            if not isinstance(entry, str) or not entry:
                raise ValueError(
                    f"{self.file}: split {split!r} must be a folder of images, a .txt list of "
                    f"image paths, or a list of these; got {entry!r}."
                )
            path = os.path.join(self.root, os.path.expanduser(entry))
            if not os.path.exists(path) and entry.startswith("../"):
                path = os.path.join(self.root, entry[3:])  # Roboflow's "../train/images"
            path = os.path.normpath(path)
            if os.path.isdir(path):
                sources.append(path)
            elif os.path.isfile(path) and path.lower().endswith(".txt"):
                sources.append(path)
            elif os.path.isfile(path):
                raise ValueError(
                    f"{self.file}: split {split!r} is {path}, which is neither a folder of "
                    "images nor a .txt list of image paths."
                )
            else:
                raise FileNotFoundError(
                    f"{self.file}: split {split!r}: {path} does not exist ({entry!r} relative "
                    f"to the dataset root 'path' {self.root})."
                )
        return sources


def _class_names(data_yaml: str, names) -> List[str]:
    """The class names of a ``names`` entry (a list, or a mapping from 0..C-1), checked."""
    example = "a list [cat, dog] or a mapping {0: cat, 1: dog}"
    if isinstance(names, dict):
        indices = {}
        for key, name in names.items():
            index = key
            if isinstance(key, str) and key.strip().isdigit():
                index = int(key)
            if isinstance(index, bool) or not isinstance(index, int):
                raise ValueError(
                    f"{data_yaml}: 'names' maps {key!r}, which is not a class index; 'names' is "
                    f"{example}."
                )
            indices[index] = name
        if sorted(indices) != list(range(len(indices))):
            raise ValueError(
                f"{data_yaml}: the class indices of 'names' must be 0..{len(indices) - 1}, got "
                f"{sorted(indices)}."
            )
        names = [indices[i] for i in range(len(indices))]
    if not isinstance(names, list):
        raise ValueError(f"{data_yaml}: 'names' is a {type(names).__name__}; it must be {example}.")
    if not names:
        raise ValueError(f"{data_yaml}: 'names' is empty; a dataset needs at least one class.")
    for index, name in enumerate(names):
        if isinstance(name, (dict, list)) or name is None or str(name) == "":
            raise ValueError(f"{data_yaml}: class {index} of 'names' has no name (got {name!r}).")
    return [str(name) for name in names]


def read_yolo_data_yaml(data_yaml: str) -> YoloDataYaml:
    """
    Reads and checks an Ultralytics ``data.yaml``: the file exists and is a YAML mapping with
    ``names`` (a list, or a mapping from class index 0..C-1 to name; ``nc``, if given, must be
    its length) and a dataset root ``path`` that is a folder. The splits are checked when one is
    used (:meth:`YoloDataYaml.split_sources`).

    Args:
        data_yaml (str): the yaml file.

    Returns:
        YoloDataYaml: absolute paths, names as strings.

    Raises:
        FileNotFoundError: the yaml or the root folder does not exist.
        ValueError: anything else above, naming the file and the key.
    """
    import yaml

    data_yaml = os.path.abspath(os.path.expanduser(data_yaml))
    if not os.path.isfile(data_yaml):
        raise FileNotFoundError(f"YOLO dataset file {data_yaml} does not exist.")
    try:
        with open(data_yaml, "rb") as f:
            data = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{data_yaml} is not a YAML file ({e}).") from e
    if not isinstance(data, dict):
        raise ValueError(
            f"{data_yaml} is not a YOLO dataset file: its top level is a "
            f"{type(data).__name__}, not a mapping with 'names' and the splits ('train', 'val')."
        )
    if "names" not in data:
        raise ValueError(
            f"{data_yaml} has no 'names' (the class names: a list, or a mapping from class index "
            "0, 1, ... to name)."
        )
    names = _class_names(data_yaml, data["names"])
    if data.get("nc") is not None and data["nc"] != len(names):
        raise ValueError(f"{data_yaml}: 'nc' is {data['nc']!r} but 'names' has {len(names)}.")
    folder = os.path.dirname(data_yaml)
    root = data.get("path") or folder
    if not isinstance(root, str):
        raise ValueError(f"{data_yaml}: 'path' must be a folder, got {root!r}.")
    root = os.path.normpath(os.path.join(folder, os.path.expanduser(root)))
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"{data_yaml}: the dataset root 'path' {root} is not a folder (a relative 'path' is "
            "relative to the yaml's folder)."
        )
    splits = {k: v for k, v in data.items() if k not in _NOT_SPLITS and isinstance(v, (str, list))}
    return YoloDataYaml(file=data_yaml, root=root, names=names, splits=splits)


# ------------------------------------------------------------------------------------------
# Images and labels
# ------------------------------------------------------------------------------------------
def yolo_label_path(image_path: str) -> str:
    """
    The label file of an image: the last ``images`` folder of its path replaced by ``labels``
    and the extension by ``.txt`` (next to the image if the path has no ``images`` folder).
    """
    parts = image_path.split(os.sep)
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == "images":
            parts[index] = "labels"
            break
    return os.path.splitext(os.sep.join(parts))[0] + ".txt"


def _list_images(sources: List[str]) -> List[Tuple[str, str]]:
    """
    (image path, where it was named) of every source: the images below a folder (recursively,
    by :data:`IMAGE_EXTENSIONS`, sorted) or the lines of a ``.txt`` list (its order).
    """
    images = []
    for source in sources:
        if os.path.isdir(source):
            found = []
            for directory, _, files in os.walk(source, followlinks=True):
                found += [
                    os.path.join(directory, f)
                    for f in files
                    if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
                ]
            images += [(path, path) for path in sorted(found)]
            continue
        with open(source, encoding="utf-8") as f:
            lines = f.read().splitlines()
        folder = os.path.dirname(source)
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                path = os.path.normpath(os.path.join(folder, os.path.expanduser(line)))
                images.append((path, f"{source}, line {number}"))
    return images


def _image_size(path: str, named_at: str) -> Tuple[int, int]:
    """
    (height, width) of an image as it is read for training (EXIF orientation applied), from
    its header: the pixels are not decoded.

    Raises:
        _BadData: the file is missing, empty or not an image Pillow can open.
    """
    from PIL import Image, UnidentifiedImageError

    where = path if named_at == path else f"{path} (named in {named_at})"
    if not os.path.isfile(path):
        raise _BadData(UNREADABLE_IMAGE, f"{where}: no such image file")
    if os.path.getsize(path) == 0:
        raise _BadData(UNREADABLE_IMAGE, f"{where}: the image file is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            width, height = image.size
            try:  # as Detectron2's read_image: EXIF that cannot be parsed is ignored
                orientation = image.getexif().get(0x0112, 1)
            except Exception:
                orientation = 1
    except UnidentifiedImageError:
        raise _BadData(UNREADABLE_IMAGE, f"{where}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise _BadData(UNREADABLE_IMAGE, f"{where}: cannot read the image ({e})") from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
        width, height = height, width
    return height, width


def _class_index(token: str, where: str, num_classes: int) -> int:
    """The class of a label line; a class outside 0..C-1 is a ValueError under either policy."""
    try:
        value = float(token)
    except ValueError:
        raise _BadData(BAD_VALUE, f"{where}: the class {token!r} is not a number") from None
    if not value.is_integer():
        raise _BadData(BAD_VALUE, f"{where}: the class {token!r} is not an integer")
    index = int(value)
    if not 0 <= index < num_classes:
        raise ValueError(
            f"{where}: class {index} is not in 'names' (classes 0..{num_classes - 1}). The names "
            "of data.yaml do not match the labels; this is an error under either "
            "DATALOADER.YOLACT_BAD_DATA policy."
        )
    return index


def _polygon(tokens: List[str], where: str) -> List[float]:
    """The normalised flat polygon of a label line, checked and clamped to [0, 1]."""
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        raise _BadData(BAD_VALUE, f"{where}: the coordinate {bad!r} is not a number") from None
    if len(values) % 2:
        raise _BadData(
            ODD_COORDINATES,
            f"{where}: an odd number of coordinates ({len(values)}); each point is an x and a y",
        )
    if len(values) < 6:
        hint = ""
        if len(values) == 4:
            hint = (
                " (class cx cy w h is a YOLO box: a detection dataset; YOLACT needs YOLO-seg "
                "polygons)"
            )
        raise _BadData(FEW_POINTS, f"{where}: {len(values) // 2} points, a polygon needs 3{hint}")
    tolerance = COORDINATE_TOLERANCE
    for position, value in enumerate(values):
        if not -tolerance <= value <= 1 + tolerance:  # also NaN
            axis = "xy"[position % 2]
            raise _BadData(
                OUTSIDE,
                f"{where}: {axis} of point {position // 2 + 1} is {value!r}, outside [0, 1] "
                f"(coordinates are normalised by the image's size; tolerance {tolerance})",
            )
    return [min(max(v, 0.0), 1.0) for v in values]


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _annotation(line: str, where: str, num_classes: int, height: int, width: int) -> dict:
    """The Detectron2 annotation of one label line (polygon in pixels, XYXY_ABS box)."""
    tokens = line.split()
    category_id = _class_index(tokens[0], where, num_classes)
    normalised = _polygon(tokens[1:], where)
    xs = [x * width for x in normalised[0::2]]
    ys = [y * height for y in normalised[1::2]]
    doubled_area = sum(xs[i - 1] * ys[i] - xs[i] * ys[i - 1] for i in range(len(xs)))
    if doubled_area == 0:
        raise _BadData(ZERO_AREA, f"{where}: the polygon has zero area (its points are on a line)")
    polygon = [v for point in zip(xs, ys) for v in point]
    return {
        "bbox": [min(xs), min(ys), max(xs), max(ys)],
        "bbox_mode": BoxMode.XYXY_ABS,
        "segmentation": [polygon],
        "category_id": category_id,
        "iscrowd": 0,
    }


def _read_label_lines(label_file: str) -> List[str]:
    """The lines of a label file ([] if there is none)."""
    if not os.path.exists(label_file):
        return []
    try:
        with open(label_file, encoding="utf-8") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise _BadData(
            UNREADABLE_LABELS, f"{label_file}: cannot read the label file ({e})"
        ) from None


# ------------------------------------------------------------------------------------------
# A split as Detectron2 dicts
# ------------------------------------------------------------------------------------------
@dataclass
class YoloSegSplit:
    """
    A split read by :func:`read_yolo_seg_split`.

    Attributes:
        records (list[dict]): Detectron2 dataset dicts, one per usable image.
        skipped (Counter): kind of bad data -> how many were dropped (policy "skip").
        first (dict): kind -> the message of its first occurrence.
        without_labels (int): images without a label file.
    """

    records: List[dict]
    skipped: Counter = field(default_factory=Counter)
    first: Dict[str, str] = field(default_factory=dict)
    without_labels: int = 0

    def summary(self) -> str:
        """One line: the counts of skipped data by kind, each with its first occurrence."""
        return "; ".join(
            f"{count} x {kind} (first: {self.first[kind]})"
            for kind, count in sorted(self.skipped.items())
        )


def read_yolo_seg_split(data_yaml, split: str, bad_data: str = "error") -> YoloSegSplit:
    """
    Reads one split of a YOLO-seg dataset as Detectron2 dicts: ``file_name``, ``height`` and
    ``width`` (from the image header, EXIF orientation applied), ``image_id`` (the image's
    position in the split, from 1: folders in sorted path order, lists in their order) and
    ``annotations``, each with a ``bbox`` (the polygon's extent, ``BoxMode.XYXY_ABS``), the
    polygon in pixels as ``segmentation``, ``category_id`` (the class index) and ``iscrowd`` 0.

    Bad data (an image that cannot be opened, a label file that cannot be read, a label line
    with a value that is not a number, an odd number of coordinates, fewer than 3 points,
    coordinates outside [0, 1] by more than :data:`COORDINATE_TOLERANCE`, a zero-area polygon)
    raises with ``bad_data`` "error"; with "skip" the line's instance (or the image) is dropped
    and counted. A class index not in ``names`` raises either way.

    Args:
        data_yaml (str or YoloDataYaml): the dataset's yaml.
        split (str): "train", "val", ... (a key of the yaml).
        bad_data (str): "error" or "skip" (``DATALOADER.YOLACT_BAD_DATA``).

    Returns:
        YoloSegSplit: the records and what was skipped.

    Raises:
        ValueError / FileNotFoundError: see :func:`read_yolo_data_yaml`; a split that is
            missing or has no images; with "error", the first bad data, naming the file and line.
    """
    if bad_data not in _POLICIES:
        raise ValueError(f"DATALOADER.YOLACT_BAD_DATA must be one of {_POLICIES}, got {bad_data!r}")
    data = data_yaml if isinstance(data_yaml, YoloDataYaml) else read_yolo_data_yaml(data_yaml)
    sources = data.split_sources(split)
    images = _list_images(sources)
    if not images:
        raise ValueError(
            f"{data.file}: split {split!r} has no images ({', '.join(sources)}; image files end "
            f"with {', '.join(IMAGE_EXTENSIONS)})."
        )
    result = YoloSegSplit(records=[])

    def problem(bad: _BadData):
        if bad_data == "error":
            raise ValueError(
                f"{bad.message} (DATALOADER.YOLACT_BAD_DATA is 'error'; 'skip' drops and counts "
                "such data instead)"
            ) from None
        result.skipped[bad.kind] += 1
        result.first.setdefault(bad.kind, bad.message)

    for image_id, (path, named_at) in enumerate(images, 1):
        label_file = yolo_label_path(path)
        try:
            height, width = _image_size(path, named_at)
            lines = _read_label_lines(label_file)
        except _BadData as bad:
            problem(bad)
            continue
        result.without_labels += not os.path.exists(label_file)
        annotations = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{label_file}, line {number}"
            try:
                annotations.append(_annotation(line, where, len(data.names), height, width))
            except _BadData as bad:
                problem(bad)
        result.records.append(
            {
                "file_name": path,
                "height": height,
                "width": width,
                "image_id": image_id,
                "annotations": annotations,
            }
        )
    if not result.records:
        raise ValueError(
            f"{data.file}: none of the {len(images)} images of split {split!r} can be used: "
            f"{result.summary()}"
        )
    return result


def load_yolo_seg_split(data_yaml, split: str, bad_data: str = "error", name: str = "") -> list:
    """
    :func:`read_yolo_seg_split`'s records, with what was read and skipped logged.

    Args:
        data_yaml (str or YoloDataYaml): the dataset's yaml.
        split (str): the split.
        bad_data (str): "error" or "skip".
        name (str): the dataset's registered name, for the log.

    Returns:
        list[dict]: Detectron2 dataset dicts.
    """
    start = time.perf_counter()
    result = read_yolo_seg_split(data_yaml, split, bad_data)
    file = data_yaml.file if isinstance(data_yaml, YoloDataYaml) else data_yaml
    title = f"{name} ({file}, {split!r})" if name else f"{file}, {split!r}"
    objects = sum(len(r["annotations"]) for r in result.records)
    logger.info(
        f"Loaded {title}: {len(result.records)} images ({result.without_labels} without a "
        f"label file), {objects} objects, in {time.perf_counter() - start:.1f} s."
    )
    if result.skipped:
        logger.warning(
            f"{title}: bad YOLO-seg data skipped (DATALOADER.YOLACT_BAD_DATA 'skip'): "
            f"{result.summary()}"
        )
    return result.records


# ------------------------------------------------------------------------------------------
# Registration: DATASETS.REGISTER_YOLO
# ------------------------------------------------------------------------------------------
# name -> the DATALOADER.YOLACT_BAD_DATA policy its loader applies (the last registration's).
_bad_data_of: Dict[str, str] = {}


def register_yolo_seg(name: str, data_yaml: str, split: str, bad_data: str = "skip") -> None:
    """
    Registers ``split`` of a YOLO-seg dataset as ``name``. The yaml and the split's folders
    are checked now; the images and labels are read when the dataset is used
    (``DatasetCatalog.get``). The metadata: ``thing_classes`` from ``names``,
    ``thing_dataset_id_to_contiguous_id`` the identity (the category ids of evaluation and of
    json outputs are the class indices), ``evaluator_type`` "coco" (``COCOEvaluator`` converts
    the records to a COCO json in its output folder), ``yolo_data_yaml`` and ``yolo_split``.

    Args:
        name (str): a name not registered yet.
        data_yaml (str): the dataset's yaml (made absolute).
        split (str): a split of the yaml.
        bad_data (str): "skip" or "error", see :func:`read_yolo_seg_split`.
    """
    data = read_yolo_data_yaml(data_yaml)
    data.split_sources(split)
    if bad_data not in _POLICIES:
        raise ValueError(f"DATALOADER.YOLACT_BAD_DATA must be one of {_POLICIES}, got {bad_data!r}")
    _bad_data_of[name] = bad_data
    DatasetCatalog.register(
        name, lambda: load_yolo_seg_split(data, split, _bad_data_of[name], name)
    )
    MetadataCatalog.get(name).set(
        thing_classes=list(data.names),
        thing_dataset_id_to_contiguous_id={i: i for i in range(len(data.names))},
        evaluator_type="coco",
        yolo_data_yaml=data.file,
        yolo_split=split,
    )


def _parse_register_entry(entry) -> Tuple[str, str, str]:
    """name, absolute data.yaml and split of one ``DATASETS.REGISTER_YOLO`` entry."""
    fields = ("name", "data_yaml", "split")
    name, data_yaml, split = parse_three_strings(entry, _REGISTER_KEY, fields, _LITERAL_EXAMPLE)
    return name, os.path.abspath(os.path.expanduser(data_yaml)), split


def _registered_source(name: str) -> Optional[str]:
    """How ``name`` is registered, in words (None if it is not)."""
    if name not in DatasetCatalog.list():
        return None
    metadata = MetadataCatalog.get(name)
    if metadata.get("yolo_data_yaml") is not None:
        return f"data_yaml={metadata.yolo_data_yaml}, split={metadata.get('yolo_split')!r}"
    if metadata.get("image_root") is not None:
        return f"COCO json_file={metadata.get('json_file')}, image_root={metadata.image_root}"
    return "by code, without yolo_data_yaml/json_file metadata (e.g. a builtin or subset)"


def register_yolo_datasets_from_config(cfg) -> list:
    """
    Registers each ``[name, data_yaml, split]`` of ``cfg.DATASETS.REGISTER_YOLO`` with
    :func:`register_yolo_seg`, under ``cfg.DATALOADER.YOLACT_BAD_DATA``. Relative paths are
    relative to the current working directory (``~`` is expanded). Registering a name again
    with the same yaml and split changes nothing but the bad-data policy.

    Args:
        cfg (CfgNode): a config with ``DATASETS.REGISTER_YOLO`` (see ``add_yolact_config``).

    Returns:
        list[str]: the names of the entries (registered now or before).

    Raises:
        ValueError: a malformed entry; a name already registered with another source; a yaml
            that is not a YOLO dataset file, or without the split.
        FileNotFoundError: a missing yaml, dataset root or split folder.
    """
    bad_data = cfg.DATALOADER.get("YOLACT_BAD_DATA", "skip")
    names = []
    for entry in cfg.DATASETS.get("REGISTER_YOLO", []):
        name, data_yaml, split = _parse_register_entry(entry)
        names.append(name)
        source = _registered_source(name)
        if source is not None:
            metadata = MetadataCatalog.get(name)
            if (metadata.get("yolo_data_yaml"), metadata.get("yolo_split")) == (data_yaml, split):
                _bad_data_of[name] = bad_data
                continue
            raise ValueError(
                f"{_REGISTER_KEY}: dataset {name!r} is already registered ({source}); it cannot "
                f"be registered again with data_yaml={data_yaml}, split={split!r}. Choose "
                "another name."
            )
        try:
            register_yolo_seg(name, data_yaml, split, bad_data)
        except (ValueError, FileNotFoundError) as e:
            raise type(e)(f"{_REGISTER_KEY} {name!r}: {e}") from e
        logger.info(
            f"Registered {name}: split {split!r} of {data_yaml}, "
            f"{len(MetadataCatalog.get(name).thing_classes)} classes."
        )
    return names
