# Copyright (c) yolact_d2 contributors.
import logging
import numpy as np
import os

import cv2
import pycocotools.mask as mask_util
import pytest
import torch
from fvcore.transforms.transform import CropTransform

from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.structures import BitMasks, BoxMode

from yolact_d2.config import get_yolact_cfg
from yolact_d2.data import SquareResize, SyntheticSpec, YolactDatasetMapper
from yolact_d2.data import dataset_mapper as dm
from yolact_d2.data import tiny_coco_root, write_synthetic_split


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests ran on one thread since they were written (a module-level call that set it
    for the whole session); now for this module's tests only."""
    torch.set_num_threads(1)


CROWD_IMAGE_ID = 87038  # tiny_coco val: 16 polygons and 1 crowd RLE, 640 x 480


def _cfg(size, augment=True):
    cfg = get_yolact_cfg()
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = [123.68, 116.78, 103.94]
    cfg.MODEL.YOLACT.INPUT_SIZE = size
    for key in ("PHOTOMETRIC", "EXPAND", "RANDOM_SAMPLE_CROP", "MIRROR"):
        cfg.INPUT.YOLACT[key] = augment
    return cfg


def _tight_boxes(masks):
    """(N, 4) XYXY tight boxes of an (N, H, W) bool tensor, computed with numpy."""
    boxes = []
    for mask in masks.numpy():
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return torch.tensor(boxes, dtype=torch.float32)


def _check_training_output(out, size, num_classes=80):
    """The dataset_dict contract of the training mapper."""
    image, instances, crowd = out["image"], out["instances"], out["crowd_boxes"]
    assert image.dtype == torch.uint8 and image.shape == (3, size, size)
    assert "annotations" not in out
    assert instances.image_size == (size, size) and len(instances) >= 1
    assert isinstance(instances.gt_masks, BitMasks)
    masks = instances.gt_masks.tensor
    assert masks.dtype == torch.bool and masks.shape == (len(instances), size, size)
    assert masks.flatten(1).any(1).all()
    assert torch.equal(instances.gt_boxes.tensor, _tight_boxes(masks))
    classes = instances.gt_classes
    assert classes.dtype == torch.int64 and ((classes >= 0) & (classes < num_classes)).all()
    assert crowd.dtype == torch.float32 and crowd.ndim == 2 and crowd.shape[1] == 4
    assert ((crowd >= 0) & (crowd <= size)).all()
    assert (crowd[:, 2:] > crowd[:, :2]).all()


@pytest.fixture(scope="module")
def crowd_record():
    records = DatasetCatalog.get("tiny_coco_val")
    return next(r for r in records if r["image_id"] == CROWD_IMAGE_ID)


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------
def test_tiny_coco_root_default_and_override(monkeypatch):
    monkeypatch.delenv("YOLACT_D2_TINY_COCO", raising=False)
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    assert tiny_coco_root() == os.path.join("datasets", "tiny_coco")  # Detectron2's default root
    monkeypatch.setenv("DETECTRON2_DATASETS", "/data")
    assert tiny_coco_root() == "/data/tiny_coco"
    monkeypatch.setenv("YOLACT_D2_TINY_COCO", "/somewhere/else")
    assert tiny_coco_root() == "/somewhere/else"


def test_tiny_coco_registered():
    root = tiny_coco_root()
    for split in ("train", "val"):
        meta = MetadataCatalog.get(f"tiny_coco_{split}")
        assert meta.json_file == os.path.join(root, f"annotations/instances_{split}2017.json")
        assert meta.image_root == os.path.join(root, f"{split}2017")
        assert meta.evaluator_type == "coco" and len(meta.thing_classes) == 80
    records = DatasetCatalog.get("tiny_coco_val")
    assert len(records) == 50
    assert sum(a.get("iscrowd", 0) for r in records for a in r["annotations"]) == 5


def test_builtin_coco_2017_names_come_from_detectron2():
    # yolact_d2 registers no COCO 2017 split of its own: Detectron2's builtin registration
    # (under $DETECTRON2_DATASETS, read at import) is what the configs and the proofs use.
    root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    for split in ("train", "val"):
        meta = MetadataCatalog.get(f"coco_2017_{split}")
        assert meta.json_file == os.path.join(root, f"coco/annotations/instances_{split}2017.json")
        assert meta.image_root == os.path.join(root, f"coco/{split}2017")
        assert len(meta.thing_classes) == 80 and meta.evaluator_type == "coco"


# --------------------------------------------------------------------------------------------
# Real images
# --------------------------------------------------------------------------------------------
def test_unaugmented_crowd_image_exact(crowd_record):
    size = 128
    out = YolactDatasetMapper(_cfg(size, augment=False), True)(crowd_record)
    _check_training_output(out, size)
    sx, sy = size / 640, size / 480
    crowd = [a for a in crowd_record["annotations"] if a["iscrowd"]]
    x, y, w, h = crowd[0]["bbox"]
    expected = torch.tensor([[x * sx, y * sy, (x + w) * sx, (y + h) * sy]])
    assert torch.allclose(out["crowd_boxes"], expected)
    annos = [a for a in crowd_record["annotations"] if not a["iscrowd"]]
    assert out["instances"].gt_classes.tolist() == [a["category_id"] for a in annos]
    boxes = BoxMode.convert(
        torch.tensor([a["bbox"] for a in annos]), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS
    ) * torch.tensor([sx, sy, sx, sy])
    # the masks land where the annotation boxes say, within the resize's rounding (thin parts
    # of a mask can vanish when shrinking by 5)
    error = (out["instances"].gt_boxes.tensor - boxes).abs()
    assert error.max() <= 2.5 and error.mean() <= 0.5
    assert out["height"] == 480 and out["width"] == 640


def test_augmented_real_images_keep_the_contract(crowd_record):
    size = 96
    mapper = YolactDatasetMapper(_cfg(size), True)
    np.random.seed(0)
    crowd_boxes, sizes = set(), set()
    for _ in range(12):
        out = mapper(crowd_record)
        _check_training_output(out, size)
        assert len(out["crowd_boxes"]) <= 1
        crowd_boxes.update(tuple(b) for b in out["crowd_boxes"].tolist())
        sizes.add(len(out["instances"]))
    assert len(crowd_boxes) > 6  # the crowd box (centred in the image) moves with the image
    assert len(sizes) > 1  # crops change the instance set
    assert not mapper.bad_data.counts


def test_inference_returns_unresized_image(crowd_record):
    out = YolactDatasetMapper(_cfg(128), False)(crowd_record)
    assert out["image"].shape == (3, 480, 640) and out["image"].dtype == torch.uint8
    assert (out["height"], out["width"]) == (480, 640)
    assert "instances" not in out and "annotations" not in out
    rgb = cv2.imread(crowd_record["file_name"])[:, :, ::-1]
    assert torch.equal(out["image"], torch.from_numpy(rgb.copy()).permute(2, 0, 1))


def test_from_config():
    cfg = _cfg(64)
    train = YolactDatasetMapper(cfg, True)
    assert train.is_train and train.image_format == "RGB" and train.num_classes == 80
    assert len(train.augmentations.augs) == 5
    assert [type(a) for a in train.fallback_augmentations.augs] == [SquareResize]
    test = YolactDatasetMapper(cfg, is_train=False)
    assert not test.is_train and len(test.augmentations.augs) == 0


def test_synthetic_split_through_the_mapper(tmp_path):
    write_synthetic_split(str(tmp_path), SyntheticSpec(num_images=3, seed=7, image_size=64))
    from detectron2.data.datasets import load_coco_json

    records = load_coco_json(str(tmp_path / "annotations.json"), str(tmp_path / "images"))
    for record in records:
        for anno in record["annotations"]:
            anno["category_id"] -= 1  # contiguous ids, as load_coco_json with a name gives
    mapper = YolactDatasetMapper(_cfg(48), True, num_classes=4)
    np.random.seed(1)
    for record in records * 4:
        _check_training_output(mapper(record), 48, num_classes=4)


# --------------------------------------------------------------------------------------------
# Bad data
# --------------------------------------------------------------------------------------------
H, W = 40, 48
GOOD_POLYGON = [[4.0, 4.0, 30.0, 4.0, 30.0, 30.0, 4.0, 30.0]]


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "image.jpg"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8))
    return str(path)


def _anno(ann_id, **kwargs):
    anno = {
        "id": ann_id,
        "bbox": [4.0, 4.0, 26.0, 26.0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 3,
        "iscrowd": 0,
        "segmentation": GOOD_POLYGON,
    }
    anno.update(kwargs)
    return anno


def _record(file_name, annotations):
    return {
        "file_name": file_name,
        "height": H,
        "width": W,
        "image_id": 1,
        "annotations": annotations,
    }


def _mapper(**kwargs):
    return YolactDatasetMapper(_cfg(32), True, **kwargs)


def test_good_record(image_file):
    out = _mapper()(_record(image_file, [_anno(1)]))
    _check_training_output(out, 32)
    assert out["instances"].gt_classes.tolist() == [3]


@pytest.mark.parametrize(
    "bad_anno,reason",
    [
        (_anno(2, bbox=[10.0, 10.0, 0.0, 5.0]), dm.BAD_BOX),
        (_anno(2, bbox=[10.0, 10.0, float("nan"), 5.0]), dm.BAD_BOX),
        (_anno(2, bbox=[]), dm.BAD_BOX),
        (_anno(2, segmentation=[]), dm.NO_SEGMENTATION),
        (_anno(2, segmentation=[[]]), dm.EMPTY_POLYGON),
        (_anno(2, segmentation=[[1.0, 2.0, 3.0, 4.0]]), dm.EMPTY_POLYGON),
        (_anno(2, segmentation=[[60.0, 50.0, 80.0, 50.0, 80.0, 70.0]]), dm.EMPTY_MASK),
        (_anno(2, segmentation={"size": [10, 10], "counts": [100]}), dm.BAD_RLE),
        (_anno(2, bbox=[1.0, 1.0, 0.0, 0.0], iscrowd=1), dm.BAD_BOX),
    ],
)
def test_bad_annotation_is_dropped_and_counted(image_file, bad_anno, reason, caplog):
    mapper = _mapper()
    with caplog.at_level(logging.WARNING, logger=dm.__name__):
        out = mapper(_record(image_file, [_anno(1), bad_anno]))
    _check_training_output(out, 32)
    assert out["instances"].gt_classes.tolist() == [3]
    assert dict(mapper.bad_data.counts) == {reason: 1}
    assert "annotation id 2" in caplog.text and image_file in caplog.text


def test_crowd_rle_annotation_is_kept_as_box(image_file):
    rle = mask_util.encode(np.asfortranarray(np.ones((H, W), np.uint8)))
    crowd = _anno(2, bbox=[0.0, 20.0, 48.0, 20.0], iscrowd=1, category_id=999, segmentation=rle)
    mapper = YolactDatasetMapper(_cfg(32, augment=False), True)
    out = mapper(_record(image_file, [_anno(1), crowd]))
    assert torch.allclose(out["crowd_boxes"], torch.tensor([[0.0, 16.0, 32.0, 32.0]]))
    assert len(out["instances"]) == 1 and not mapper.bad_data.counts


def test_crowd_box_outside_image_vanishes_quietly(image_file):
    # not an error: it goes through the transforms like any crowd box and is clipped away
    mapper = YolactDatasetMapper(_cfg(32, augment=False), True)
    outside = _anno(2, bbox=[-30.0, -30.0, 10.0, 10.0], iscrowd=1)
    out = mapper(_record(image_file, [_anno(1), outside]))
    assert out["crowd_boxes"].shape == (0, 4) and not mapper.bad_data.counts


@pytest.mark.parametrize("category_id", [80, -1, None, "3"])
def test_unknown_category_raises_with_file_and_id(image_file, category_id):
    with pytest.raises(ValueError) as err:
        _mapper()(_record(image_file, [_anno(1), _anno(77, category_id=category_id)]))
    assert image_file in str(err.value) and "annotation id 77" in str(err.value)


@pytest.mark.parametrize(
    "annotations,reason",
    [
        ([], dm.NO_ANNOTATIONS),
        (None, dm.NO_ANNOTATIONS),
        ([_anno(1, iscrowd=1), _anno(2, iscrowd=1)], dm.CROWD_ONLY),
        ([_anno(1, segmentation=[[]]), _anno(2, iscrowd=1)], dm.NO_VALID_INSTANCE),
    ],
)
def test_image_without_usable_instance_is_skipped(image_file, annotations, reason):
    mapper = _mapper()
    record = _record(image_file, annotations)
    if annotations is None:
        del record["annotations"]
    assert mapper(record) is None
    assert mapper.bad_data.counts[reason] == 1


def _corrupt(path, content):
    with open(path, "wb") as f:
        f.write(content)
    return path


@pytest.mark.parametrize("kind", ["missing", "garbage", "truncated", "size_mismatch"])
def test_unreadable_image_is_skipped_in_training_and_raises_in_inference(
    tmp_path, image_file, kind, caplog
):
    record = _record(image_file, [_anno(1)])
    if kind == "missing":
        record["file_name"] = str(tmp_path / "missing.jpg")
    elif kind == "garbage":
        record["file_name"] = _corrupt(str(tmp_path / "garbage.jpg"), b"not a jpeg at all")
    elif kind == "truncated":
        with open(image_file, "rb") as f:
            head = f.read()[:300]
        record["file_name"] = _corrupt(str(tmp_path / "truncated.jpg"), head)
    else:
        record["height"] = H + 1
    mapper = _mapper()
    with caplog.at_level(logging.WARNING, logger=dm.__name__):
        assert mapper(record) is None
    assert dict(mapper.bad_data.counts) == {dm.UNREADABLE_IMAGE: 1}
    assert record["file_name"] in caplog.text
    with pytest.raises(OSError, match=record["file_name"]):
        YolactDatasetMapper(_cfg(32), False)(record)


def test_resampling_then_fallback(image_file):
    # this "augmentation" crops a corner without the instance: every draw loses it
    corner = CropTransform(40, 34, 8, 6, orig_w=W, orig_h=H)
    mapper = _mapper(augmentations=[corner, SquareResize(32)], max_resample_tries=3)
    out = mapper(_record(image_file, [_anno(1)]))
    _check_training_output(out, 32)
    assert dict(mapper.bad_data.counts) == {dm.AUGMENTATION_FALLBACK: 1}
    # the fallback is the plain resize: the square polygon [4, 30) scaled by 32/48 and 32/40
    assert torch.allclose(
        out["instances"].gt_boxes.tensor, torch.tensor([[3.0, 3.0, 20.0, 24.0]]), atol=1.0
    )
    no_fallback = _mapper(augmentations=[corner], fallback_augmentations=[corner])
    assert no_fallback(_record(image_file, [_anno(1)])) is None
    assert no_fallback.bad_data.counts[dm.NOTHING_AFTER_RESIZE] == 1


def test_counter_logs_periodically(caplog):
    counter = dm.BadDataCounter(log_period=5)
    with caplog.at_level(logging.WARNING, logger=dm.__name__):
        for i in range(12):
            counter.add("reason A", f"item {i}")
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 3  # first, 5th and 10th
    assert "item 0" in logged[0] and "item 9" in logged[2] and "'reason A': 10" in logged[2]
    assert counter.counts["reason A"] == 12


def test_train_loader_skips_bad_images(tmp_path, image_file):
    missing = _record(str(tmp_path / "missing.jpg"), [_anno(1)])
    crowd_only = _record(image_file, [_anno(2, iscrowd=1)])
    good = _record(image_file, [_anno(3)])
    loader = build_detection_train_loader(
        [missing, crowd_only, good], mapper=_mapper(), total_batch_size=4, num_workers=0
    )
    batch = next(iter(loader))
    assert len(batch) == 4
    for out in batch:
        assert out["file_name"] == image_file
        _check_training_output(out, 32)
