# Copyright (c) yolact_d2 contributors.
"""
Bad training data (issue 12) under DATALOADER.YOLACT_BAD_DATA: "skip" (default) drops and counts
it, "error" raises at the first problem - before training starts - naming the file and the
annotation; a dataset whose every image is bad is an error, not an endless retry.
"""

import math

import pytest

from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from yolact_d2.data import YolactDatasetMapper
from yolact_d2.data import dataset_mapper as dm
from yolact_d2.data import validate_training_data
from yolact_d2.engine import YolactTrainer

from common import get_config

OPTS = [
    "MODEL.YOLACT.INPUT_SIZE", 96,
    "MODEL.RESNETS.DEPTH", 18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
    "INPUT.YOLACT.EXPAND", False,
    "INPUT.YOLACT.RANDOM_SAMPLE_CROP", False,
]  # fmt: skip
SQUARE = [10.0, 10.0, 40.0, 10.0, 40.0, 40.0, 10.0, 40.0]


def _record(annotations):
    image = DatasetCatalog.get("tiny_coco_train")[0]
    return {
        "file_name": image["file_name"],
        "height": image["height"],
        "width": image["width"],
        "image_id": 1,
        "annotations": annotations,
    }


def _annotation(id, segmentation=None, bbox=(10, 10, 30, 30), category=0):
    return {
        "id": id,
        "bbox": list(bbox),
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": category,
        "iscrowd": 0,
        "segmentation": [SQUARE] if segmentation is None else segmentation,
    }


BAD_ANNOTATIONS = {
    "polygon of 2 points": (_annotation(7, [[10.0, 10.0, 40.0, 40.0]]), dm.EMPTY_POLYGON),
    "NaN polygon": (_annotation(7, [[10.0, math.nan] + SQUARE[2:]]), dm.EMPTY_POLYGON),
    "infinite box": (_annotation(7, bbox=(10, 10, math.inf, 30)), dm.BAD_BOX),
    "NaN box": (_annotation(7, bbox=(math.nan, 10, 30, 30)), dm.BAD_BOX),
    "box and mask outside the image": (
        _annotation(7, [[5000.0, 5000.0, 5040.0, 5000.0, 5040.0, 5040.0]], (5000, 5000, 40, 40)),
        dm.EMPTY_MASK,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_bad_annotations_are_counted_skips_or_errors(case):
    bad, reason = BAD_ANNOTATIONS[case]
    skip = YolactDatasetMapper(get_config("yolact_R_50_FPN_550.yaml", OPTS), True)
    out = skip(_record([_annotation(1), bad]))
    assert out is not None and len(out["instances"]) == 1  # the good one trains
    assert skip.bad_data.counts == {reason: 1}
    assert skip(_record([bad])) is None  # nothing usable left: the image is skipped
    cfg = get_config("yolact_R_50_FPN_550.yaml", OPTS + ["DATALOADER.YOLACT_BAD_DATA", "error"])
    strict = YolactDatasetMapper(cfg, True)
    with pytest.raises(ValueError, match="annotation id 7") as error:
        strict(_record([_annotation(1), bad]))
    assert _record([])["file_name"] in str(error.value)
    assert "YOLACT_BAD_DATA" in str(error.value)


def test_a_category_outside_the_classes_is_an_error_in_both_modes():
    for policy in ("skip", "error"):
        cfg = get_config("yolact_R_50_FPN_550.yaml", OPTS + ["DATALOADER.YOLACT_BAD_DATA", policy])
        with pytest.raises(ValueError, match=r"annotation id 3: category_id 80"):
            YolactDatasetMapper(cfg, True)(_record([_annotation(3, category=80)]))


def test_a_dataset_of_only_bad_images_is_an_error_not_an_endless_retry(tmp_path):
    cfg = get_config("yolact_R_50_FPN_550.yaml", OPTS)
    mapper = YolactDatasetMapper(
        **{**YolactDatasetMapper.from_config(cfg, True), "max_consecutive_skips": 5}
    )
    missing = dict(_record([_annotation(1)]), file_name=str(tmp_path / "gone.jpg"))
    for _ in range(4):
        assert mapper(missing) is None
    with pytest.raises(RuntimeError, match="the last 5 training images were all skipped"):
        mapper(missing)
    assert mapper(_record([_annotation(1)])) is not None  # a good image resets the count
    assert mapper._consecutive_skips == 0


def test_error_policy_checks_everything_before_training(tmp_path):
    good, (bad, _) = _record([_annotation(1)]), BAD_ANNOTATIONS["NaN polygon"]
    records = [good, dict(good, image_id=2, annotations=[_annotation(1), bad])]
    DatasetCatalog.register("bad_data_test_train", lambda: records)
    cfg = get_config("yolact_R_50_FPN_550.yaml", OPTS)
    cfg.DATASETS.TRAIN = ("bad_data_test_train",)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.OUTPUT_DIR = str(tmp_path)
    assert validate_training_data(cfg, [good]) == 1
    cfg.DATALOADER.YOLACT_BAD_DATA = "error"
    with pytest.raises(ValueError, match="annotation id 7"):
        YolactTrainer(cfg)  # builds the training loader: fails before any iteration
    missing = dict(good, file_name=str(tmp_path / "gone.jpg"))
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        validate_training_data(cfg, [missing])
    cfg.DATALOADER.YOLACT_BAD_DATA = "sometimes"
    with pytest.raises(ValueError, match="must be one of"):
        YolactDatasetMapper(cfg, True)
