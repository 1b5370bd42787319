# Copyright (c) yolact_d2 contributors.
"""
Ultralytics YOLO-seg datasets without conversion (issue 24): DATASETS.REGISTER_YOLO
(yolact_d2.data.yolo_seg), its records against an independent rasterisation of the label files,
every kind of bad input under both DATALOADER.YOLACT_BAD_DATA policies, and datasets/README.md's
YOLO-seg walk-through run as written (train, --eval-only, then the demo's --dataset).
"""

import json
import logging
import numpy as np
import os
import re
import subprocess
import sys
import uuid

import cv2
import pycocotools.mask as mask_util
import pytest
import yaml
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.coco import convert_to_coco_dict
from detectron2.data.detection_utils import read_image
from detectron2.structures import BoxMode

from yolact_d2 import get_yolact_cfg
from yolact_d2.data import (
    read_yolo_data_yaml,
    read_yolo_seg_split,
    register_yolo_datasets_from_config,
    setup_datasets,
    yolo_label_path,
)
from yolact_d2.data.examples import write_shapes_split, write_shapes_yolo_dataset

from common import REPO_ROOT, get_config

README = os.path.join(REPO_ROOT, "datasets", "README.md")
NAMES = ["plate", "ring"]
WIDTH, HEIGHT = 320, 240

# Polygons in pixels of a WIDTH x HEIGHT image, by class.
TRIANGLE = [(40, 30), (150, 50), (70, 140)]
RECTANGLE = [(180, 120), (300, 120), (300, 220), (180, 220)]
PENTAGON = [(160, 20), (250, 70), (220, 170), (100, 170), (70, 70)]
# One object in two parts, joined by a zero-width bridge along y = 100 (as Ultralytics'
# converters write objects of several polygons): squares (20..100, 20..100) and (160..240,
# 100..180).
TWO_PARTS = [
    (20, 20),
    (100, 20),
    (100, 100),
    (160, 100),
    (240, 100),
    (240, 180),
    (160, 180),
    (160, 100),
    (100, 100),
    (20, 100),
]


def label_line(class_index, points, width=WIDTH, height=HEIGHT):
    """``class x1 y1 ... xn yn`` with the points normalised by the image's size."""
    return f"{class_index} " + " ".join(f"{x / width:.6f} {y / height:.6f}" for x, y in points)


# split -> image path below images/<split> -> label lines (None: no label file)
LABELS = {
    "train": {
        "a.jpg": [label_line(0, TRIANGLE), label_line(1, RECTANGLE)],
        "sub/b.png": [label_line(1, TWO_PARTS)],
        "c.jpg": None,
        "d.jpg": [],
    },
    "val": {
        "e.jpg": [label_line(0, PENTAGON), "", label_line(1, RECTANGLE)],
        "f.jpg": [label_line(1, TWO_PARTS)],
        "g.jpg": None,
    },
}


def write_image(path, size=(WIDTH, HEIGHT), seed=0):
    """A random colour image (an object-like blob on a background) at ``path``."""
    rng = np.random.default_rng(seed)
    image = np.full((size[1], size[0], 3), rng.integers(0, 80, size=3), np.uint8)
    cv2.circle(image, (size[0] // 2, size[1] // 2), min(size) // 4, (200, 200, 200), -1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, image)


def write_labels(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


def write_dataset(root, labels=LABELS, yaml_text=None):
    """``root/data.yaml``, ``root/images/<split>/...`` and ``root/labels/<split>/...``."""
    for split, images in labels.items():
        for seed, (name, lines) in enumerate(sorted(images.items())):
            write_image(os.path.join(root, "images", split, name), seed=seed)
            if lines is not None:
                stem = os.path.splitext(name)[0]
                write_labels(os.path.join(root, "labels", split, stem + ".txt"), lines)
    if yaml_text is None:
        splits = "".join(f"{split}: images/{split}\n" for split in labels)
        yaml_text = f"path: .\n{splits}names: [{', '.join(NAMES)}]\n"
    with open(os.path.join(root, "data.yaml"), "w") as f:
        f.write(yaml_text)
    return os.path.join(root, "data.yaml")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The test's dataset: data.yaml with names as a list, and dict_names.yaml (a mapping)."""
    root = str(tmp_path_factory.mktemp("yolo_seg"))
    write_dataset(root)
    with open(os.path.join(root, "dict_names.yaml"), "w") as f:  # no path: the yaml's folder
        f.write("train: images/train\nval: images/val\nnames:\n  1: ring\n  0: plate\n")
    return root


def unique(prefix):
    """A dataset name no other test uses (the catalogs are global to the process)."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def config(register=(), train=(), test=(), opts=()):
    cfg = get_config("yolact_R_50_FPN_550.yaml", opts)
    cfg.DATASETS.REGISTER_YOLO = [list(e) if isinstance(e, tuple) else e for e in register]
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = tuple(train), tuple(test)
    return cfg


def register(data_yaml, split, bad_data="error"):
    name = unique(f"yolo_{split}")
    cfg = config(register=[(name, data_yaml, split)], opts=["DATALOADER.YOLACT_BAD_DATA", bad_data])
    assert register_yolo_datasets_from_config(cfg) == [name]
    return name


def rasterise(points, width=WIDTH, height=HEIGHT, scale=8):
    """
    The mask of a polygon given in pixels, with OpenCV: filled at ``scale`` times the
    resolution (fillPoly also fills the pixels the outline crosses, a line too many at 1x), a
    pixel set where the polygon covers at least half of it.
    """
    fine = np.zeros((height * scale, width * scale), np.uint8)
    # fine pixel (i, j) spans [j, j + 1) / scale: its centre is at OpenCV's integer coordinate j
    vertices = np.round((np.asarray(points, np.float64) * scale - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(fine, [vertices], 1, shift=4)
    return fine.reshape(height, scale, width, scale).mean(axis=(1, 3)) >= 0.5


def decoded(annotation, height, width):
    """The record's polygons decoded by pycocotools, as COCO evaluation does."""
    rles = mask_util.frPyObjects(annotation["segmentation"], height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


# ------------------------------------------------------------------------------------------
# Registration and records
# ------------------------------------------------------------------------------------------
def test_config_key_and_command_line_literal():
    cfg = get_yolact_cfg()
    assert cfg.DATASETS.REGISTER_YOLO == []
    cfg.merge_from_list(
        ["DATASETS.REGISTER_YOLO", "[('a', 'data/data.yaml', 'train'), ('b', 'd.yaml', 'val')]"]
    )
    assert [list(e) for e in cfg.DATASETS.REGISTER_YOLO] == [
        ["a", "data/data.yaml", "train"],
        ["b", "d.yaml", "val"],
    ]


def test_label_path_replaces_the_last_images_folder():
    assert yolo_label_path("/d/images/train/x.jpg") == "/d/labels/train/x.txt"
    assert yolo_label_path("/images/d/images/train/a.b.PNG") == "/images/d/labels/train/a.b.txt"
    assert yolo_label_path("/d/train/x.jpg") == "/d/train/x.txt"  # no images folder: beside it
    assert yolo_label_path("/d/images/images.jpg") == "/d/labels/images.txt"


def test_registration_gives_the_expected_records(dataset):
    name = register(os.path.join(dataset, "data.yaml"), "train")
    metadata = MetadataCatalog.get(name)
    assert metadata.thing_classes == NAMES and metadata.evaluator_type == "coco"
    assert metadata.thing_dataset_id_to_contiguous_id == {0: 0, 1: 1}
    assert metadata.yolo_data_yaml == os.path.join(dataset, "data.yaml")
    assert metadata.yolo_split == "train"
    records = DatasetCatalog.get(name)
    images = os.path.join(dataset, "images", "train")
    # sorted paths; ids from 1; images without a label file or with an empty one have no objects
    assert [r["file_name"] for r in records] == [
        os.path.join(images, p) for p in ("a.jpg", "c.jpg", "d.jpg", "sub/b.png")
    ]
    assert [r["image_id"] for r in records] == [1, 2, 3, 4]
    assert all((r["height"], r["width"]) == (HEIGHT, WIDTH) for r in records)
    assert [len(r["annotations"]) for r in records] == [2, 0, 0, 1]
    expected = {
        "a.jpg": [(0, TRIANGLE), (1, RECTANGLE)],
        "sub/b.png": [(1, TWO_PARTS)],
    }
    for record in records:
        objects = expected.get(os.path.relpath(record["file_name"], images), [])
        for annotation, (class_index, points) in zip(record["annotations"], objects):
            xs, ys = np.asarray(points, np.float64).T
            assert annotation["category_id"] == class_index and annotation["iscrowd"] == 0
            assert annotation["bbox_mode"] == BoxMode.XYXY_ABS
            np.testing.assert_allclose(
                annotation["bbox"], [xs.min(), ys.min(), xs.max(), ys.max()], atol=1e-3
            )
            assert len(annotation["segmentation"]) == 1  # one polygon: one line, one instance
            np.testing.assert_allclose(
                annotation["segmentation"][0], np.ravel(points).astype(float), atol=1e-3
            )


@pytest.mark.parametrize("split", ["train", "val"])
def test_masks_match_an_independent_rasterisation(dataset, split):
    records = read_yolo_seg_split(os.path.join(dataset, "data.yaml"), split).records
    checked = 0
    for record in records:
        stem = os.path.splitext(os.path.relpath(record["file_name"], dataset))[0]
        label_file = os.path.join(dataset, stem.replace("images", "labels", 1) + ".txt")
        lines = []
        if os.path.exists(label_file):
            with open(label_file) as f:
                lines = [line.split() for line in f if line.strip()]
        assert len(lines) == len(record["annotations"])
        for tokens, annotation in zip(lines, record["annotations"]):
            normalised = np.asarray(tokens[1:], np.float64).reshape(-1, 2)
            points = normalised * [record["width"], record["height"]]
            expected = rasterise(points, record["width"], record["height"])
            mask = decoded(annotation, record["height"], record["width"])
            assert iou(mask, expected) >= 0.99, (record["file_name"], iou(mask, expected))
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = annotation["bbox"]
            assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
            assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1
            checked += 1
    assert checked == {"train": 3, "val": 3}[split]


def test_two_part_object_is_one_instance_covering_both_parts(dataset):
    record = read_yolo_seg_split(os.path.join(dataset, "data.yaml"), "val").records[1]
    (annotation,) = record["annotations"]
    mask = decoded(annotation, HEIGHT, WIDTH)
    assert mask[60, 60] and mask[140, 200]  # inside each square
    assert not mask[140, 60] and not mask[60, 200]  # the other corners of the extent
    assert abs(mask.sum() - 2 * 80 * 80) <= 2 * 80 * 4  # the bridge adds at most a line
    assert annotation["bbox"] == pytest.approx([20, 20, 240, 180], abs=1e-3)


def test_names_as_a_mapping_and_root_without_path(dataset):
    data = read_yolo_data_yaml(os.path.join(dataset, "dict_names.yaml"))
    assert data.names == NAMES and data.root == dataset
    name = register(os.path.join(dataset, "dict_names.yaml"), "val")
    assert MetadataCatalog.get(name).thing_classes == NAMES
    assert [len(r["annotations"]) for r in DatasetCatalog.get(name)] == [2, 1, 0]


def test_list_files_lists_of_folders_and_relative_paths(dataset, tmp_path):
    """A yaml in another folder (path relative to it), a .txt split, a list of folders."""
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text(
        f"# images\n{dataset}/images/train/sub/b.png\n\n../data/images/train/a.jpg\n"
    )
    os.symlink(dataset, tmp_path / "data")
    (tmp_path / "yaml").mkdir()
    (tmp_path / "yaml" / "d.yaml").write_text(
        "path: ..\ntrain: lists/train.txt\nval: [data/images/val, data/images/train/sub]\n"
        "names: [plate, ring]\nnc: 2\n"
    )
    data_yaml = str(tmp_path / "yaml" / "d.yaml")
    train = read_yolo_seg_split(data_yaml, "train").records
    assert [os.path.basename(r["file_name"]) for r in train] == ["b.png", "a.jpg"]  # list order
    assert [len(r["annotations"]) for r in train] == [1, 2]
    val = read_yolo_seg_split(data_yaml, "val").records
    assert [os.path.basename(r["file_name"]) for r in val] == ["e.jpg", "f.jpg", "g.jpg", "b.png"]


def test_roboflow_layout(tmp_path):
    """Roboflow's export: no path, ``train: ../train/images`` read as ``train/images``."""
    root = str(tmp_path)
    write_image(os.path.join(root, "train", "images", "x.jpg"))
    write_labels(os.path.join(root, "train", "labels", "x.txt"), [label_line(0, TRIANGLE)])
    (tmp_path / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['thing']\n"
    )
    (record,) = read_yolo_seg_split(str(tmp_path / "data.yaml"), "train").records
    assert record["annotations"][0]["category_id"] == 0


def test_exif_orientation_is_applied_to_the_size(tmp_path):
    """A photo stored 40 x 30 with EXIF orientation 6 (rotated) is read 30 wide, 40 high."""
    path = str(tmp_path / "images" / "train" / "rotated.jpg")
    os.makedirs(os.path.dirname(path))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 30), (90, 20, 20)).save(path, exif=exif)
    write_labels(yolo_label_path(path), [label_line(0, [(0, 0), (30, 0), (30, 40)], 30, 40)])
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [thing]\n")
    (record,) = read_yolo_seg_split(str(tmp_path / "data.yaml"), "train").records
    assert (record["height"], record["width"]) == read_image(path).shape[:2] == (40, 30)
    assert record["annotations"][0]["bbox"] == pytest.approx([0, 0, 30, 40])


def test_coordinates_within_the_tolerance_are_clamped(tmp_path):
    line = "0 -0.0009 0.2 1.0009 0.2 0.5 1.0005"
    write_dataset(str(tmp_path), {"train": {"a.jpg": [line]}})
    (record,) = read_yolo_seg_split(str(tmp_path / "data.yaml"), "train").records
    assert record["annotations"][0]["bbox"] == pytest.approx([0, 0.2 * HEIGHT, WIDTH, HEIGHT])


def test_evaluation_json_and_num_classes(dataset):
    name = register(os.path.join(dataset, "data.yaml"), "val")
    coco = convert_to_coco_dict(name)  # what COCOEvaluator writes for datasets without a json
    assert coco["categories"] == [{"id": 0, "name": "plate"}, {"id": 1, "name": "ring"}]
    assert [image["id"] for image in coco["images"]] == [1, 2, 3]
    assert len(coco["annotations"]) == 3 and all(a["area"] > 1000 for a in coco["annotations"])
    cfg = config(train=[name])
    cfg.freeze()
    with pytest.raises(ValueError, match=f"NUM_CLASSES is 80 but dataset {name!r} has 2 classes"):
        setup_datasets(cfg)
    cfg = config(train=[name], opts=["MODEL.YOLACT.NUM_CLASSES_FROM_DATA", True])
    assert setup_datasets(cfg).MODEL.YOLACT.NUM_CLASSES == 2


def test_registration_is_idempotent_and_names_cannot_be_reused(dataset):
    data_yaml = os.path.join(dataset, "data.yaml")
    name = unique("yolo_again")
    cfg = config(register=[(name, data_yaml, "train")])
    for _ in range(2):
        assert register_yolo_datasets_from_config(cfg) == [name]
    spelled = config(register=[(name, dataset + "/./data.yaml", "train")])
    register_yolo_datasets_from_config(spelled)  # the same file, spelled differently
    with pytest.raises(ValueError, match=f"{name}.*already registered.*split='train'.*'val'"):
        register_yolo_datasets_from_config(config(register=[(name, data_yaml, "val")]))
    with pytest.raises(ValueError, match="'tiny_coco_val' is already registered.*COCO json_file"):
        register_yolo_datasets_from_config(config(register=[("tiny_coco_val", data_yaml, "val")]))


@pytest.mark.parametrize(
    "entry", [("only_two", "data.yaml"), ("name", "data.yaml", 3), "name,data.yaml,train"]
)
def test_malformed_entries_are_rejected(entry):
    with pytest.raises(ValueError, match=r"\[name, data_yaml, split\]"):
        register_yolo_datasets_from_config(config(register=[entry]))


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------
# data.yaml problems, an error at registration under either policy: yaml text (None: no file),
# split, the error type and a pattern of its message (after the file's name).
BAD_YAML = {
    "missing_yaml": (None, "train", FileNotFoundError, "does not exist"),
    "not_yaml": ("names: [a\ntrain: [", "train", ValueError, "is not a YAML file"),
    "not_a_mapping": ("- a\n- b\n", "train", ValueError, "its top level is a list"),
    "no_names": ("train: images/train\n", "train", ValueError, "has no 'names'"),
    "empty_names": ("train: images/train\nnames: []\n", "train", ValueError, "'names' is empty"),
    "names_gap": (
        "train: images/train\nnames: {0: a, 2: b}\n",
        "train",
        ValueError,
        r"class indices of 'names' must be 0..1, got \[0, 2\]",
    ),
    "nc_mismatch": (
        "train: images/train\nnc: 3\nnames: [a, b]\n",
        "train",
        ValueError,
        "'nc' is 3 but 'names' has 2",
    ),
    "missing_root": (
        "path: nowhere\ntrain: images/train\nnames: [a]\n",
        "train",
        FileNotFoundError,
        "the dataset root 'path' .*nowhere is not a folder",
    ),
    "missing_split_folder": (
        "train: images/training\nnames: [a]\n",
        "train",
        FileNotFoundError,
        r"split 'train': .*images/training does not exist",
    ),
    "no_such_split": (
        "train: images/train\nnames: [a]\n",
        "test",
        ValueError,
        r"has no 'test' split \(its splits: 'train'\)",
    ),
    "split_is_not_a_list_file": (
        "train: images/train/a.jpg\nnames: [a]\n",
        "train",
        ValueError,
        "neither a folder of images nor a .txt list",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_bad_data_yaml_is_an_error_naming_the_file(case, tmp_path):
    text, split, error_type, pattern = BAD_YAML[case]
    write_image(str(tmp_path / "images" / "train" / "a.jpg"))
    data_yaml = str(tmp_path / "data.yaml")
    if text is not None:
        (tmp_path / "data.yaml").write_text(text)
    name = unique(case)
    for policy in ("skip", "error"):
        cfg = config(register=[(name, data_yaml, split)])
        cfg.DATALOADER.YOLACT_BAD_DATA = policy
        with pytest.raises(error_type) as error:
            register_yolo_datasets_from_config(cfg)
        message = str(error.value)
        assert f"DATASETS.REGISTER_YOLO {name!r}: " in message and data_yaml in message, message
        assert re.search(pattern, message), message
    assert name not in DatasetCatalog.list()


def test_split_without_images(tmp_path):
    os.makedirs(tmp_path / "images" / "train")
    (tmp_path / "images" / "train" / "notes.txt").write_text("not an image")
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [a]\n")
    with pytest.raises(ValueError, match="split 'train' has no images"):
        read_yolo_seg_split(str(tmp_path / "data.yaml"), "train")


GOOD = label_line(0, TRIANGLE)
# A second label line of a.jpg: the line, the kind counted under "skip", a message pattern.
BAD_LINES = {
    "odd": ("0 0.1 0.1 0.5 0.1 0.5", "odd number of coordinates", r"odd number.*\(5\)"),
    "two_points": ("0 0.1 0.1 0.5 0.1", "fewer than 3 points", "2 points, a polygon needs 3"),
    "box": ("1 0.5 0.5 0.2 0.2", "fewer than 3 points", "YOLO box.*detection dataset"),
    "class_only": ("1", "fewer than 3 points", "0 points"),
    "outside": ("0 0.1 0.1 0.5 1.2 0.5 0.5", "outside [0, 1]", "y of point 2 is 1.2, outside"),
    "negative": ("0 0.1 -0.01 0.5 0.1 0.5 0.5", "outside [0, 1]", "y of point 1 is -0.01"),
    "nan": ("0 0.1 0.1 0.5 nan 0.5 0.5", "outside [0, 1]", "is nan, outside"),
    "not_a_number": ("0 0.1 0.1 0.5 abc 0.5 0.5", "not a number", "coordinate 'abc' is not"),
    "class_not_a_number": ("cat 0.1 0.1 0.5 0.1 0.5 0.5", "not a number", "class 'cat' is not"),
    "class_fraction": ("0.5 0.1 0.1 0.5 0.1 0.5 0.5", "not a number", "not an integer"),
    "zero_area": ("0 0.1 0.1 0.2 0.2 0.3 0.3", "zero area", "zero area"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_label_lines(case, tmp_path):
    line, kind, pattern = BAD_LINES[case]
    data_yaml = write_dataset(str(tmp_path), {"train": {"a.jpg": [GOOD, line], "b.jpg": [GOOD]}})
    label_file = str(tmp_path / "labels" / "train" / "a.txt")
    with pytest.raises(ValueError) as error:
        read_yolo_seg_split(data_yaml, "train", "error")
    message = str(error.value)
    assert message.startswith(f"{label_file}, line 2: "), message
    assert re.search(pattern, message) and "YOLACT_BAD_DATA is 'error'" in message, message
    # skip: the line's instance is dropped, the image and its good line kept, the line counted
    result = read_yolo_seg_split(data_yaml, "train", "skip")
    assert [len(r["annotations"]) for r in result.records] == [1, 1]
    ((counted, count),) = result.skipped.items()
    assert kind in counted and count == 1
    assert result.first[counted].startswith(f"{label_file}, line 2: ")


def test_class_not_in_names_is_an_error_under_both_policies(tmp_path):
    data_yaml = write_dataset(str(tmp_path), {"train": {"a.jpg": [GOOD, label_line(2, TRIANGLE)]}})
    for policy in ("skip", "error"):
        with pytest.raises(ValueError) as error:
            read_yolo_seg_split(data_yaml, "train", policy)
        message = str(error.value)
        label_file = str(tmp_path / "labels" / "train" / "a.txt")
        assert message.startswith(f"{label_file}, line 2: class 2 is not in 'names'"), message
        assert "classes 0..1" in message


@pytest.mark.parametrize("content", [b"", b"\x89PNG garbage, not an image"])
def test_unreadable_images(content, tmp_path):
    data_yaml = write_dataset(str(tmp_path), {"train": {"a.jpg": [GOOD], "b.jpg": [GOOD]}})
    broken = str(tmp_path / "images" / "train" / "b.jpg")
    with open(broken, "wb") as f:
        f.write(content)
    with pytest.raises(ValueError, match=f"^{re.escape(broken)}: .*YOLACT_BAD_DATA is 'error'"):
        read_yolo_seg_split(data_yaml, "train", "error")
    result = read_yolo_seg_split(data_yaml, "train", "skip")
    assert [os.path.basename(r["file_name"]) for r in result.records] == ["a.jpg"]
    assert result.skipped == {"unreadable image": 1}
    # the ids stay those of the image's position in the split
    assert result.records[0]["image_id"] == 1


def test_missing_image_of_a_list_names_the_list_and_line(tmp_path):
    data_yaml = write_dataset(str(tmp_path), {"train": {"a.jpg": [GOOD]}})
    (tmp_path / "train.txt").write_text("images/train/a.jpg\nimages/train/gone.jpg\n")
    (tmp_path / "data.yaml").write_text("train: train.txt\nnames: [plate, ring]\n")
    with pytest.raises(ValueError, match=r"gone\.jpg \(named in .*train\.txt, line 2\): no such"):
        read_yolo_seg_split(data_yaml, "train", "error")
    assert len(read_yolo_seg_split(data_yaml, "train", "skip").records) == 1


def test_unreadable_label_file_drops_the_image(tmp_path):
    data_yaml = write_dataset(str(tmp_path), {"train": {"a.jpg": [GOOD], "b.jpg": [GOOD]}})
    with open(tmp_path / "labels" / "train" / "b.txt", "wb") as f:
        f.write(b"0 0.1 \xff\xfe 0.2\n")
    with pytest.raises(ValueError, match=r"b\.txt: cannot read the label file"):
        read_yolo_seg_split(data_yaml, "train", "error")
    result = read_yolo_seg_split(data_yaml, "train", "skip")
    assert len(result.records) == 1 and sum(result.skipped.values()) == 1


def test_all_images_unusable_is_an_error(tmp_path):
    data_yaml = write_dataset(str(tmp_path), {"train": {"a.jpg": [GOOD]}})
    (tmp_path / "images" / "train" / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="none of the 1 images of split 'train' can be used"):
        read_yolo_seg_split(data_yaml, "train", "skip")


def test_registered_loader_follows_the_config_policy(tmp_path):
    """The policy is the config's when the dataset is read; skips are logged as one summary."""
    line = BAD_LINES["odd"][0]
    data_yaml = write_dataset(str(tmp_path), {"train": {"a.jpg": [GOOD, line, line]}})
    name = unique("yolo_policy")
    cfg = config(register=[(name, data_yaml, "train")])
    cfg.DATALOADER.YOLACT_BAD_DATA = "error"
    register_yolo_datasets_from_config(cfg)
    with pytest.raises(ValueError, match=r"a\.txt, line 2: an odd number"):
        DatasetCatalog.get(name)
    cfg.DATALOADER.YOLACT_BAD_DATA = "skip"
    register_yolo_datasets_from_config(cfg)  # the same source again: only the policy changes
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("yolact_d2.data.yolo_seg")
    logger.addHandler(handler)
    try:
        (record,) = DatasetCatalog.get(name)
    finally:
        logger.removeHandler(handler)
    assert len(record["annotations"]) == 1
    (message,) = messages
    assert "2 x label line with an odd number of coordinates (first: " in message
    assert "a.txt, line 2" in message and "YOLACT_BAD_DATA 'skip'" in message


# ------------------------------------------------------------------------------------------
# The example dataset and datasets/README.md's walk-through, as written
# ------------------------------------------------------------------------------------------
def test_example_dataset_has_the_coco_example_objects(tmp_path):
    """tools/example_data.py's my_shapes_yolo: the shapes of my_shapes, classes by sorted id."""
    data_yaml = write_shapes_yolo_dataset(str(tmp_path / "yolo"), num_train=4, num_val=2)
    json_file = write_shapes_split(str(tmp_path / "coco"), "train", 4, seed=0)
    with open(json_file) as f:
        coco = json.load(f)
    records = read_yolo_seg_split(data_yaml, "train").records
    assert read_yolo_data_yaml(data_yaml).names == ["square", "circle"]
    for record, image in zip(records, coco["images"]):
        assert record["image_id"] == image["id"]
        assert os.path.basename(record["file_name"]) == image["file_name"]
        expected = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert len(record["annotations"]) == len(expected)
        for ours, theirs in zip(record["annotations"], expected):
            assert ours["category_id"] == theirs["category_id"] - 1
            np.testing.assert_allclose(ours["segmentation"], theirs["segmentation"], atol=1e-3)


def walkthrough_script():
    """The fenced bash block after ``<!-- walkthrough-yolo -->`` in datasets/README.md."""
    with open(README) as f:
        text = f.read()
    match = re.search(r"<!-- walkthrough-yolo -->\s*```bash\n(.*?)```", text, re.S)
    assert match, "datasets/README.md has no ```bash block after <!-- walkthrough-yolo -->"
    return match.group(1)


def test_readme_walkthrough_trains_and_evaluates(dataset, tmp_path):
    """The walk-through on the test's dataset (an image without labels, a two-part object)."""
    script = walkthrough_script()
    out = str(tmp_path / "out")
    for variable, value in (("DATA", dataset), ("OUT", out)):
        script, count = re.subn(rf"^{variable}=.*$", f"{variable}={value}", script, flags=re.M)
        assert count == 1, f"the walk-through sets {variable} once, at the top"
    script, count = re.subn(r"^python ", f"{sys.executable} ", script, flags=re.M)
    assert count >= 2
    # the demo's --dataset takes the names too, with the config the training wrote
    predictions = str(tmp_path / "val.json")
    script += (
        f"{sys.executable} tools/demo.py --config-file {out}/config.yaml --dataset "
        f"my_shapes_yolo_val --output-json {predictions} MODEL.WEIGHTS {out}/model_final.pth\n"
    )
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")  # other jobs may share the cores
    result = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    log = result.stdout
    assert result.returncode == 0, log[-5000:]
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    with open(os.path.join(out, "config.yaml")) as f:
        written = yaml.safe_load(f)
    assert written["MODEL"]["YOLACT"]["NUM_CLASSES"] == 2  # MODEL.YOLACT.NUM_CLASSES_FROM_DATA
    assert [e[2] for e in written["DATASETS"]["REGISTER_YOLO"]] == ["train", "val"]
    eval_log = log[log.rindex("Command Line Args") :]
    assert "eval_only=True" in eval_log.splitlines()[0]
    for task in ("bbox", "segm"):
        assert f"Evaluation results for {task}:" in eval_log, eval_log[-5000:]
    assert "plate" in eval_log and "ring" in eval_log  # the per-class table: the yaml's names
    assert os.path.isfile(
        os.path.join(out, "eval", "inference", "my_shapes_yolo_val_coco_format.json")
    )
    with open(predictions) as f:
        detections = json.load(f)
    assert detections and {d["image_id"] for d in detections} <= {1, 2, 3}
    assert {d["category_id"] for d in detections} <= {0, 1}
