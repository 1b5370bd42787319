# Copyright (c) yolact_d2 contributors.
"""
Whatever cameras and folders give (issue 12): grayscale, RGBA, 16-bit, CMYK and EXIF-rotated
files, truncated, corrupt, empty and non-image files, tiny and extreme aspect ratios, images
without detections - through YolactPredictor (a DefaultPredictor), the demo and the exported
model's predictor: correct results, or one clear error naming the input.
"""

import numpy as np
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from yolact_d2.data.image_io import ImageInputError, as_bgr_uint8, read_image_bgr
from yolact_d2.deploy import ExportedPredictor, export_model
from yolact_d2.engine import YolactPredictor

from common import REPO_ROOT, get_config

CONFIG = "demo/yolact_R_18_synthetic.yaml"
RGB = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> path of every kind of input file."""
    root = tmp_path_factory.mktemp("inputs")
    paths = {}

    def path(name):
        paths[name] = str(root / name)
        return paths[name]

    Image.fromarray(RGB).save(path("rgb.png"))
    Image.fromarray(RGB).convert("L").save(path("gray.png"))
    Image.fromarray(np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])).save(path("rgba.png"))
    Image.fromarray(RGB[:, :, 0].astype(np.uint16) * 257).save(path("16bit.png"))
    Image.fromarray(RGB).convert("CMYK").save(path("cmyk.jpg"), quality=100)
    rotated = Image.fromarray(RGB)
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rotated.save(path("exif.jpg"), exif=exif, quality=100)
    Image.fromarray(RGB).save(path("ok.jpg"), quality=95)
    data = open(paths["ok.jpg"], "rb").read()
    open(path("truncated.jpg"), "wb").write(data[: len(data) // 2])
    open(path("text.jpg"), "w").write("not an image")
    open(path("empty.png"), "wb").close()
    return paths


def test_every_kind_of_file_is_read_or_refused_by_name(files):
    rgb = read_image_bgr(files["rgb.png"])
    assert np.array_equal(rgb, RGB[:, :, ::-1])
    gray = read_image_bgr(files["gray.png"])
    luma = np.asarray(Image.fromarray(RGB).convert("L"))
    assert all(np.array_equal(gray[:, :, c], luma) for c in range(3))
    assert np.array_equal(read_image_bgr(files["rgba.png"]), RGB[:, :, ::-1])  # alpha dropped
    assert np.array_equal(read_image_bgr(files["16bit.png"])[:, :, 0], RGB[:, :, 0])
    cmyk = read_image_bgr(files["cmyk.jpg"]).astype(int)
    assert np.abs(cmyk - RGB[:, :, ::-1]).mean() < 4  # Pillow's CMYK conversion, JPEG loss
    upright = read_image_bgr(files["exif.jpg"])  # the EXIF rotation is applied
    stored = np.asarray(Image.open(files["exif.jpg"]).convert("RGB"))[:, :, ::-1]
    assert stored.shape == (48, 64, 3) and upright.shape == (64, 48, 3)
    assert np.array_equal(upright, np.rot90(stored, k=-1))  # 90 degrees clockwise
    for name, reason in [
        ("truncated.jpg", "truncated or corrupt"),
        ("text.jpg", "not an image file"),
        ("empty.png", r"empty \(0 bytes\)"),
        ("missing.png", "no such file"),
    ]:
        with pytest.raises(ImageInputError, match=reason) as error:
            read_image_bgr(files.get(name, os.path.join(os.path.dirname(files["ok.jpg"]), name)))
        assert name in str(error.value)


def test_arrays_are_normalised_or_refused():
    assert as_bgr_uint8(RGB[:, :, 0]).shape == (48, 64, 3)
    assert as_bgr_uint8(RGB[:, :, :1]).shape == (48, 64, 3)
    assert np.array_equal(as_bgr_uint8(np.dstack([RGB, RGB[:, :, :1]])), RGB)
    assert np.array_equal(as_bgr_uint8(RGB.astype(np.uint16) << 8), RGB)
    for bad, reason in [
        (RGB.astype(np.float32), "uint8"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros(5, np.uint8), "shape"),
    ]:
        with pytest.raises(ImageInputError, match=reason):
            as_bgr_uint8(bad, "frame 3")


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return YolactPredictor(get_config(CONFIG, ["MODEL.YOLACT.TEST.SCORE_THRESH", 0.0]))


@pytest.mark.parametrize("shape", [(1, 1), (3, 1000), (1000, 3), (48, 64)])
def test_tiny_and_extreme_images_predict_at_their_size(predictor, shape):
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    instances = predictor(image)["instances"]
    assert instances.image_size == shape and instances.pred_masks.shape[1:] == shape
    # in a 1 x 1 image every integer pixel box may have zero area: dropped, as the reference
    assert len(instances) > 0 or shape == (1, 1)
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= shape[1]).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= shape[0]).all()


def test_predictor_takes_grayscale_and_refuses_float(predictor):
    gray = predictor(RGB[:, :, 0])["instances"]
    same = predictor(np.repeat(RGB[:, :, :1], 3, axis=2))["instances"]
    assert torch.equal(gray.scores, same.scores)
    with pytest.raises(ImageInputError, match="uint8"):
        predictor(RGB.astype(np.float64))
    with pytest.raises(ImageInputError, match="image 1 of the batch"):
        predictor([RGB, RGB.astype(np.float32)])


def test_an_image_without_detections():
    torch.manual_seed(0)
    predictor = YolactPredictor(get_config(CONFIG, ["MODEL.YOLACT.TEST.SCORE_THRESH", 1.0]))
    instances = predictor(RGB)["instances"]
    assert len(instances) == 0 and instances.pred_masks.shape == (0, 48, 64)
    assert instances.pred_boxes.tensor.shape == (0, 4)


def test_exported_predictor_takes_the_same_inputs(predictor, tmp_path):
    path = export_model(get_config(CONFIG), predictor.model, "onnx", str(tmp_path))
    exported = ExportedPredictor(path)
    for image in [RGB, RGB[:, :, 0], np.dstack([RGB, RGB[:, :, :1]]), RGB[:3, :], RGB[:, :3]]:
        got = exported(image)["instances"]
        expected = predictor(image)["instances"]
        assert got.image_size == expected.image_size
        assert len(got) == len(expected)
    with pytest.raises(ImageInputError, match="uint8"):
        exported(RGB.astype(np.float32))


def test_demo_reads_every_kind_and_reports_the_bad_ones(files, tmp_path):
    folder = os.path.dirname(files["ok.jpg"])
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "demo.py"), "--config-file",
         os.path.join(REPO_ROOT, "configs", CONFIG), "--input", folder, "--output",
         str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    for name in ("truncated.jpg", "text.jpg", "empty.png"):
        assert f"{name}: " in proc.stderr and name in proc.stderr.splitlines()[-1]
    drawn = sorted(os.listdir(tmp_path / "out"))
    assert drawn == [
        "16bit.png",
        "cmyk.png",
        "exif.png",
        "gray.png",
        "ok.png",
        "rgb.png",
        "rgba.png",
    ]
    assert "Traceback" not in proc.stderr


def test_exported_model_on_a_1x1_image_and_without_detections(tmp_path, runtime="onnxruntime"):
    from detectron2.modeling import build_model

    for threshold, expected_any in ((0.0, True), (1.0, False)):
        torch.manual_seed(0)
        cfg = get_config(CONFIG, ["MODEL.YOLACT.TEST.SCORE_THRESH", threshold])
        path = export_model(cfg, build_model(cfg).eval(), "onnx", str(tmp_path / str(threshold)))
        predictor = ExportedPredictor(path, runtime)
        for shape in [(1, 1), (2, 2), (48, 64)]:
            image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
            instances = predictor(image)["instances"]
            assert instances.image_size == shape and instances.pred_masks.shape[1:] == shape
            if shape != (1, 1):
                assert (len(instances) > 0) == expected_any
