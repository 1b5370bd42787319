# Copyright (c) yolact_d2 contributors.
"""
Training on your own COCO json without Python: DATASETS.REGISTER_COCO,
MODEL.YOLACT.NUM_CLASSES_FROM_DATA (yolact_d2.data.setup_datasets). datasets/README.md's
walk-through runs as written in tests/test_documented_commands.py.
"""

import glob
import json
import os
import re
import uuid

import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from yolact_d2 import get_yolact_cfg
from yolact_d2.data import (
    read_coco_categories,
    register_coco_datasets_from_config,
    register_dataset_subset,
    resolve_num_classes,
    setup_datasets,
)
from yolact_d2.data.examples import write_shapes_split

from common import CONFIG_DIR, get_config

CLASSES = {7: "square", 3: "circle"}  # not contiguous, not in id order: names sorted by id


# ------------------------------------------------------------------------------------------
# A small two-class dataset in the README's layout
# ------------------------------------------------------------------------------------------
def write_split(root, split, num_images, seed):
    """``root/<split>/*.jpg`` and ``root/annotations/instances_<split>.json`` with CLASSES."""
    return write_shapes_split(root, split, num_images, seed, classes=CLASSES)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """The README's layout: ``annotations/instances_{train,val}.json``, ``train/``, ``val/``."""
    root = str(tmp_path_factory.mktemp("my_shapes"))
    write_split(root, "train", 4, seed=0)
    write_split(root, "val", 2, seed=1)
    return root


def unique(prefix):
    """A dataset name no other test uses (the catalogs are global to the process)."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def config(register=(), train=(), test=(), opts=()):
    cfg = get_config("yolact_R_50_FPN_550.yaml", opts)
    cfg.DATASETS.REGISTER_COCO = list(register)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = tuple(train), tuple(test)
    return cfg


def train_entry(root, name):
    return (name, os.path.join(root, "annotations", "instances_train.json"), root + "/train")


# ------------------------------------------------------------------------------------------
# Registration
# ------------------------------------------------------------------------------------------
def test_config_keys_and_command_line_literal():
    cfg = get_yolact_cfg()
    assert cfg.DATASETS.REGISTER_COCO == [] and cfg.MODEL.YOLACT.NUM_CLASSES_FROM_DATA is False
    cfg.merge_from_list(
        ["DATASETS.REGISTER_COCO", '[["shapes_train","data/train.json","data/images"]]']
    )
    assert cfg.DATASETS.REGISTER_COCO == [["shapes_train", "data/train.json", "data/images"]]
    # the README's form: tuples, single-quoted strings (inside a double-quoted shell argument)
    cfg.merge_from_list(
        ["DATASETS.REGISTER_COCO", "[('a', 'a.json', 'im'), ('b', 'b.json', 'im')]"]
    )
    assert [list(e) for e in cfg.DATASETS.REGISTER_COCO] == [
        ["a", "a.json", "im"],
        ["b", "b.json", "im"],
    ]


def test_names_and_ids_are_read_at_registration(shapes):
    name = unique("shapes_train")
    cfg = config(register=[train_entry(shapes, name)])
    assert register_coco_datasets_from_config(cfg) == [name]
    metadata = MetadataCatalog.get(name)
    assert metadata.thing_classes == ["circle", "square"]  # by increasing id: 3, 7
    assert metadata.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}
    assert metadata.evaluator_type == "coco"
    assert os.path.isabs(metadata.json_file) and os.path.isabs(metadata.image_root)
    # loading stays lazy, and agrees with the eager metadata (Detectron2 would assert otherwise)
    records = DatasetCatalog.get(name)
    assert len(records) == 4 and {a["category_id"] for r in records for a in r["annotations"]} <= {
        0,
        1,
    }
    assert metadata.thing_classes == ["circle", "square"]


def test_relative_paths_are_relative_to_the_working_directory(shapes, monkeypatch):
    monkeypatch.chdir(shapes)
    name = unique("shapes_relative")
    cfg = config(register=[(name, "annotations/instances_train.json", "train")])
    register_coco_datasets_from_config(cfg)
    assert MetadataCatalog.get(name).json_file == os.path.join(
        shapes, "annotations", "instances_train.json"
    )
    assert MetadataCatalog.get(name).image_root == os.path.join(shapes, "train")


def test_registration_is_idempotent(shapes):
    name = unique("shapes_again")
    cfg = config(register=[train_entry(shapes, name)])
    register_coco_datasets_from_config(cfg)
    before = MetadataCatalog.get(name).as_dict()
    for _ in range(2):
        assert register_coco_datasets_from_config(cfg) == [name]
    assert MetadataCatalog.get(name).as_dict() == before
    # the same files spelled differently are the same source
    again = config(register=[(name, before["json_file"], shapes + "/./train/")])
    register_coco_datasets_from_config(again)


def test_conflicting_registration_is_an_error(shapes):
    name = unique("shapes_conflict")
    register_coco_datasets_from_config(config(register=[train_entry(shapes, name)]))
    val_json = os.path.join(shapes, "annotations", "instances_val.json")
    other = config(register=[(name, val_json, os.path.join(shapes, "val"))])
    with pytest.raises(ValueError) as error:
        register_coco_datasets_from_config(other)
    message = str(error.value)
    assert name in message and "instances_train.json" in message and val_json in message


def test_builtin_and_code_registered_names_cannot_be_reused(shapes):
    entry = train_entry(shapes, "coco_2017_val")
    with pytest.raises(ValueError) as error:
        register_coco_datasets_from_config(config(register=[entry]))
    message = str(error.value)
    assert "'coco_2017_val'" in message and "instances_val2017.json" in message
    assert entry[1] in message
    subset = register_dataset_subset(unique("tiny_coco_train_first1"), "tiny_coco_train", 1)
    with pytest.raises(ValueError, match=f"{subset}.*already registered.*without json_file"):
        register_coco_datasets_from_config(config(register=[train_entry(shapes, subset)]))


@pytest.mark.parametrize(
    "entry", [("only_two", "a.json"), ("name", "a.json", 3), "name,a.json,images"]
)
def test_malformed_entries_are_rejected(entry):
    with pytest.raises(ValueError, match=r"\[name, json_file, image_root\]"):
        register_coco_datasets_from_config(config(register=[entry]))


def test_missing_json_or_image_root(shapes, tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError, match=f"DATASETS.REGISTER_COCO 'x1'.*{missing}"):
        register_coco_datasets_from_config(config(register=[("x1", missing, shapes)]))
    json_file = train_entry(shapes, "x")[1]
    no_dir = str(tmp_path / "no_images")
    with pytest.raises(FileNotFoundError, match=f"image root {no_dir} is not a directory"):
        register_coco_datasets_from_config(config(register=[("x2", json_file, no_dir)]))
    assert "x1" not in DatasetCatalog.list() and "x2" not in DatasetCatalog.list()


def _valid_coco():
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 8, "width": 8}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 2, 2],
                "segmentation": [[0, 0, 2, 0, 2, 2]],
                "area": 2.0,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }


def _without(section, key):
    coco = _valid_coco()
    del coco[section][0][key]
    return coco


BAD_JSON = {
    "not_json": ("{'images': [", "is not a JSON file"),
    "binary": (b"\xff\xfe\x00garbage", "is not a JSON file"),
    "a_list": ([], "is not COCO instances format: its top level is a list"),
    "no_images": ({"annotations": [], "categories": []}, "has no 'images'"),
    "no_annotations": ({"images": [], "categories": []}, "has no 'annotations'"),
    "no_categories": ({"images": [], "annotations": []}, "has no 'categories'"),
    "categories_not_list": (
        {"images": [], "annotations": [], "categories": {"1": "a"}},
        "has a non-list 'categories'",
    ),
    "empty_categories": ({**_valid_coco(), "categories": []}, "'categories' is empty"),
    "category_without_id": (_without("categories", "id"), r"categories\[0\] has no integer 'id'"),
    "category_string_id": (
        {**_valid_coco(), "categories": [{"id": "1", "name": "thing"}]},
        r"categories\[0\] has no integer 'id' \(got '1'\)",
    ),
    "category_without_name": (
        _without("categories", "name"),
        r"categories\[0\] \(id 1\) has no string 'name'",
    ),
    "duplicate_category_ids": (
        {**_valid_coco(), "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]},
        r"duplicate category ids \[1\]",
    ),
    "image_without_file_name": (_without("images", "file_name"), r"images\[0\].*'file_name'"),
    "annotation_without_area": (_without("annotations", "area"), r"annotations\[0\].*'area'"),
    "unknown_category": (
        {**_valid_coco(), "categories": [{"id": 2, "name": "other"}]},
        r"annotations\[0\] \(id 1\) has category_id 1, which is not in 'categories' \[2\]",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_bad_json_is_an_error_naming_the_file_and_key(case, tmp_path):
    content, expected = BAD_JSON[case]
    json_file = tmp_path / f"{case}.json"
    if isinstance(content, bytes):
        json_file.write_bytes(content)
    elif isinstance(content, str):
        json_file.write_text(content)
    else:
        json_file.write_text(json.dumps(content))
    name = unique(case)
    with pytest.raises(ValueError) as error:
        register_coco_datasets_from_config(config(register=[(name, str(json_file), str(tmp_path))]))
    message = str(error.value)
    assert f"DATASETS.REGISTER_COCO {name!r}" in message and str(json_file) in message
    assert re.search(expected, message), message
    assert name not in DatasetCatalog.list()
    with pytest.raises(ValueError, match=re.escape(str(json_file))):
        read_coco_categories(str(json_file))


# ------------------------------------------------------------------------------------------
# NUM_CLASSES
# ------------------------------------------------------------------------------------------
def test_num_classes_mismatch_names_both_numbers_and_the_option(shapes):
    name = unique("shapes_nc")
    cfg = config(register=[train_entry(shapes, name)], train=[name])
    cfg.freeze()
    with pytest.raises(ValueError) as error:
        setup_datasets(cfg)  # NUM_CLASSES 80 from the config
    message = str(error.value)
    assert "MODEL.YOLACT.NUM_CLASSES is 80" in message and f"{name!r} has 2 classes" in message
    assert "MODEL.YOLACT.NUM_CLASSES 2" in message
    assert "MODEL.YOLACT.NUM_CLASSES_FROM_DATA True" in message


def test_num_classes_from_data(shapes):
    name = unique("shapes_from_data")
    cfg = config(
        register=[train_entry(shapes, name)],
        train=[name],
        opts=["MODEL.YOLACT.NUM_CLASSES_FROM_DATA", True],
    )
    cfg.freeze()
    resolved = setup_datasets(cfg)
    assert resolved.MODEL.YOLACT.NUM_CLASSES == 2 and resolved.is_frozen()
    assert cfg.MODEL.YOLACT.NUM_CLASSES == 80  # the input is not changed
    # agreeing configs come back as they are, frozen or not
    agreeing = config(train=[name], opts=["MODEL.YOLACT.NUM_CLASSES", 2])
    assert setup_datasets(agreeing) is agreeing and not agreeing.is_frozen()


def test_train_and_test_datasets_must_share_their_classes(shapes):
    name = unique("shapes_vs_coco")
    cfg = config(
        register=[train_entry(shapes, name)],
        train=[name],
        test=["tiny_coco_val"],
        opts=["MODEL.YOLACT.NUM_CLASSES_FROM_DATA", True],
    )
    with pytest.raises(ValueError, match=f"{name}.*2 classes.*'tiny_coco_val' \\(80 classes\\)"):
        setup_datasets(cfg)


def test_datasets_without_known_classes_and_other_models_are_not_checked():
    cfg = config(train=["not_registered_anywhere"], opts=["MODEL.YOLACT.NUM_CLASSES", 3])
    assert resolve_num_classes(cfg) is cfg
    assert "not_registered_anywhere" not in MetadataCatalog.list()
    mask_rcnn = config(train=["tiny_coco_train"], opts=["MODEL.YOLACT.NUM_CLASSES", 3])
    mask_rcnn.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    assert resolve_num_classes(mask_rcnn) is mask_rcnn


@pytest.mark.parametrize(
    "path",
    sorted(
        os.path.relpath(p, CONFIG_DIR) for p in glob.glob(f"{CONFIG_DIR}/**/*.yaml", recursive=True)
    ),
)
def test_every_config_agrees_with_its_datasets(path):
    """Builtin COCO and tiny_coco (80), the synthetic sets (4) and the overfit8 subset."""
    register_dataset_subset("tiny_coco_train_first8", "tiny_coco_train", 8)
    cfg = get_config(path)
    cfg.freeze()
    assert setup_datasets(cfg) is cfg
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        classes = MetadataCatalog.get(name).thing_classes
        assert len(classes) == cfg.MODEL.YOLACT.NUM_CLASSES, name
