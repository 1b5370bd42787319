# Copyright (c) yolact_d2 contributors.
import json
import numpy as np
import os

import cv2
import pycocotools.mask as mask_util
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from yolact_d2.data import synthetic
from yolact_d2.data.synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticSpec,
    ensure_synthetic_split,
    register_synthetic_split,
    render_synthetic_image,
    synthetic_root,
    write_synthetic_split,
)

SPEC = SyntheticSpec(num_images=6, seed=11, image_size=64)


def _read(directory):
    with open(os.path.join(directory, "annotations.json"), "rb") as f:
        raw = f.read()
    return raw, json.loads(raw)


def _pixels(directory, coco):
    return [cv2.imread(os.path.join(directory, "images", i["file_name"])) for i in coco["images"]]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("synthetic") / "split")
    write_synthetic_split(directory, SPEC)
    return directory


def test_same_seed_gives_identical_files(split, tmp_path):
    write_synthetic_split(str(tmp_path / "again"), SPEC)
    raw, coco = _read(split)
    raw_again, _ = _read(str(tmp_path / "again"))
    assert raw == raw_again
    for a, b in zip(_pixels(split, coco), _pixels(str(tmp_path / "again"), coco)):
        assert a is not None and np.array_equal(a, b)


def test_other_seed_gives_other_images(split, tmp_path):
    other = SyntheticSpec(num_images=SPEC.num_images, seed=12, image_size=SPEC.image_size)
    write_synthetic_split(str(tmp_path / "other"), other)
    _, coco = _read(split)
    pixels, other_pixels = _pixels(split, coco), _pixels(str(tmp_path / "other"), coco)
    assert not any(np.array_equal(a, b) for a, b in zip(pixels, other_pixels))


def test_render_is_a_function_of_the_generator_state():
    a = render_synthetic_image(np.random.default_rng([3, 4]), SPEC)
    b = render_synthetic_image(np.random.default_rng([3, 4]), SPEC)
    assert np.array_equal(a[0], b[0]) and len(a[1]) == len(b[1]) >= 1
    assert all(ca == cb and np.array_equal(ma, mb) for (ca, ma), (cb, mb) in zip(a[1], b[1]))


def test_json_is_consistent(split):
    _, coco = _read(split)
    assert coco["info"] == SPEC.info()
    assert [c["name"] for c in coco["categories"]] == list(SYNTHETIC_CLASSES)
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4]
    assert len(coco["images"]) == SPEC.num_images
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    classes_seen = set()
    for image in coco["images"]:
        assert (image["height"], image["width"]) == (64, 64)
        pixels = cv2.imread(os.path.join(split, "images", image["file_name"]))
        assert pixels.shape == (64, 64, 3)
        annos = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert 1 <= len(annos) <= SPEC.max_instances
        union = np.zeros((64, 64), np.int32)
        for anno in annos:
            mask = mask_util.decode(anno["segmentation"])
            assert mask.shape == (64, 64)
            ys, xs = np.nonzero(mask)
            x0, y0 = xs.min(), ys.min()
            assert anno["bbox"] == [x0, y0, xs.max() + 1 - x0, ys.max() + 1 - y0]
            assert anno["area"] == mask.sum() >= SPEC.min_visible_area
            assert anno["iscrowd"] == 0 and 1 <= anno["category_id"] <= 4
            classes_seen.add(anno["category_id"])
            union += mask
        assert union.max() == 1  # visible masks never overlap
    assert classes_seen == {1, 2, 3, 4}


def test_occlusion_leaves_visible_parts():
    # many large shapes: some masks must have been cut by later shapes
    spec = SyntheticSpec(num_images=1, seed=0, image_size=64, max_instances=12)
    cut = 0
    for index in range(10):
        image, instances = render_synthetic_image(np.random.default_rng([0, index]), spec)
        assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
        masks = np.stack([m for _, m in instances])
        assert masks.sum(0).max() <= 1
        assert (masks.sum((1, 2)) >= spec.min_visible_area).all()
        filled = [
            cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5))) for m in masks
        ]
        cut += sum(int(f.sum()) - int(m.sum()) > 10 for f, m in zip(filled, masks))
    assert cut > 0


def test_ensure_generates_once_atomically_and_regenerates(tmp_path):
    directory = str(tmp_path / "data" / "train")
    json_file, image_root = ensure_synthetic_split(directory, SPEC)
    assert json_file == os.path.join(directory, "annotations.json")
    assert sorted(os.listdir(image_root)) == [f"{i:06d}.jpg" for i in range(SPEC.num_images)]
    assert os.listdir(tmp_path / "data") == ["train"]  # no temporary directory left
    stamp = os.stat(json_file).st_mtime_ns
    ensure_synthetic_split(directory, SPEC)
    assert os.stat(json_file).st_mtime_ns == stamp  # complete: not written again

    os.remove(os.path.join(image_root, "000003.jpg"))
    ensure_synthetic_split(directory, SPEC)
    assert os.path.exists(os.path.join(image_root, "000003.jpg"))

    bigger = SyntheticSpec(num_images=8, seed=SPEC.seed, image_size=SPEC.image_size)
    ensure_synthetic_split(directory, bigger)
    assert _read(directory)[1]["info"]["num_images"] == 8 and len(os.listdir(image_root)) == 8
    assert os.listdir(tmp_path / "data") == ["train"]


def test_registration_is_lazy(tmp_path):
    directory = str(tmp_path / "lazy")
    register_synthetic_split("test_synthetic_lazy", directory, SPEC)
    try:
        assert not os.path.exists(directory)
        meta = MetadataCatalog.get("test_synthetic_lazy")
        assert meta.thing_classes == list(SYNTHETIC_CLASSES) and meta.evaluator_type == "coco"
        assert meta.json_file == os.path.join(directory, "annotations.json")
        records = DatasetCatalog.get("test_synthetic_lazy")
        assert os.path.isdir(directory) and len(records) == SPEC.num_images
        classes = {a["category_id"] for r in records for a in r["annotations"]}
        assert classes <= {0, 1, 2, 3}  # contiguous ids
        assert all(os.path.exists(r["file_name"]) for r in records)
    finally:
        DatasetCatalog.remove("test_synthetic_lazy")
        MetadataCatalog.remove("test_synthetic_lazy")


def test_builtin_names_registered(monkeypatch):
    for name, count, seed in [("yolact_synthetic_train", 400, 0), ("yolact_synthetic_val", 50, 1)]:
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == list(SYNTHETIC_CLASSES)
        assert meta.json_file.startswith(synthetic_root())
        subdir, spec = synthetic._SPLITS[name]
        assert (spec.num_images, spec.seed, spec.image_size) == (count, seed, 160)
    monkeypatch.setenv("YOLACT_D2_DATASETS", "/data/sets")
    assert synthetic_root() == os.path.join("/data/sets", "yolact_synthetic")
