# Copyright (c) yolact_d2 contributors.
"""
MODEL.YOLACT.PRESERVE_ASPECT_RATIO: the input sizes, priors in pixels, the crop of padded
detections, square images unchanged, training and evaluation on wide and tall images, export
parity, int8 and the demo.
"""

import json
import math
import numpy as np
import os
import subprocess
import sys

import cv2
import pytest
import torch

from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.structures import BitMasks, Boxes, Instances

from yolact_d2.data import SyntheticSpec, register_synthetic_split
from yolact_d2.data.synthetic import render_synthetic_image
from yolact_d2.engine import YolactPredictor
from yolact_d2.engine.trainer import YolactTrainer
from yolact_d2.layers.input_size import aspect_preserving_size, batch_input_size, padded_input_size
from yolact_d2.modeling.matching import match_priors
from yolact_d2.modeling.meta_arch import _pad_instances
from yolact_d2.modeling.paste import detections_in_content
from yolact_d2.modeling.priors import YolactPriorGenerator, generate_level_priors

from common import REPO_ROOT, get_config, get_model

ASPECT = ["MODEL.YOLACT.PRESERVE_ASPECT_RATIO", True]
DEMO = "demo/yolact_R_18_synthetic.yaml"


# ------------------------------------------------------------------------------------------
# Input sizes
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "image, resized, padded",
    [
        ((720, 1280), (308, 550), (312, 550)),  # 309.4 -> 308 (multiple of 4), padded to 312
        ((1280, 720), (550, 308), (550, 312)),
        ((480, 640), (412, 550), (416, 550)),  # 412.5 -> 412
        ((550, 550), (550, 550), (550, 550)),  # square: the square mode's input
        ((100, 100), (550, 550), (550, 550)),
        ((540, 550), (540, 550), (544, 550)),
        ((546, 550), (550, 550), (550, 550)),  # 548 would pad to 552 > 550: stretched to 550
        ((1, 1000), (4, 550), (8, 550)),  # at least one multiple of 4
        ((3, 2), (550, 368), (550, 368)),  # 366.7 -> 368
    ],
)
def test_input_sizes(image, resized, padded):
    assert aspect_preserving_size(*image, 550) == resized
    assert padded_input_size(*resized, 550) == padded


def test_input_size_invariants():
    rng = np.random.default_rng(0)
    for height, width in rng.integers(1, 5000, size=(2000, 2)).tolist():
        for size in (550, 400, 700, 160):
            h, w = aspect_preserving_size(height, width, size)
            assert max(h, w) == size
            assert (h, w) == aspect_preserving_size(h, w, size)  # the mapper's, then the model's
            for n, original in ((h, height), (w, width)):
                exact = original * size / max(height, width)
                if n != size:
                    assert n % 4 == 0 and (abs(n - exact) <= 2 + 1e-9 or n == 4)
                else:  # the longest side, or snapped to it from less than 8 + 2 pixels away
                    assert exact > size - 10
            ph, pw = padded_input_size(h, w, size)
            assert ph <= size and pw <= size
            assert all(p == size or (p % 8 == 0 and p - n < 8) for p, n in ((ph, h), (pw, w)))


def test_batch_input_size_is_the_largest():
    assert batch_input_size([(308, 550), (550, 308)], 550) == (550, 550)
    assert batch_input_size([(308, 550), (412, 550)], 550) == (416, 550)


# ------------------------------------------------------------------------------------------
# Priors
# ------------------------------------------------------------------------------------------
def _pixel_priors(feature_size, scales, ratios, input_hw, square):
    """The priors computed directly in pixels of the (H, W) input: (cx, cy, w, h) pixels."""
    conv_h, conv_w = feature_size
    in_h, in_w = input_hw
    rows = []
    for y in range(conv_h):
        for x in range(conv_w):
            for s in scales:
                for r in ratios:
                    w = s * math.sqrt(r)
                    h = w if square else s / math.sqrt(r)
                    rows.append(((x + 0.5) * in_w / conv_w, (y + 0.5) * in_h / conv_h, w, h))
    return np.array(rows)


@pytest.mark.parametrize("square", [True, False])
@pytest.mark.parametrize("input_hw", [(312, 550), (550, 312), (416, 544)])
def test_priors_keep_their_size_in_pixels(square, input_hw):
    feature = (math.ceil(input_hw[0] / 16), math.ceil(input_hw[1] / 16))
    scales, ratios = [48.0, 60.5], [1.0, 0.5, 2.0]
    relative = generate_level_priors(feature, scales, ratios, input_hw, square).double().numpy()
    in_h, in_w = input_hw
    pixels = relative * np.array([in_w, in_h, in_w, in_h])
    expected = _pixel_priors(feature, scales, ratios, input_hw, square)
    np.testing.assert_allclose(pixels, expected, rtol=1e-6)
    if square:  # square anchors stay square in pixels
        np.testing.assert_allclose(pixels[:, 2], pixels[:, 3], rtol=1e-6)


@pytest.mark.parametrize("square", [True, False])
def test_square_input_priors_are_the_reference_ones(square):
    scales, ratios = [24.0, 30.2], [1.0, 0.5, 2.0]
    reference = generate_level_priors((69, 69), scales, ratios, 550, square)
    assert torch.equal(
        reference, generate_level_priors((69, 69), scales, ratios, (550, 550), square)
    )
    generator = YolactPriorGenerator(get_config("yolact_R_50_FPN_550.yaml"))
    sizes = [(69, 69), (35, 35), (18, 18), (9, 9), (5, 5)]
    assert torch.equal(generator(sizes), generator(sizes, input_size=(550, 550)))


# ------------------------------------------------------------------------------------------
# Padding: ground truth, matching, detections of the content
# ------------------------------------------------------------------------------------------
def test_padding_is_background_and_never_a_positive():
    gt = Instances((308, 550))
    gt.gt_boxes = Boxes(torch.tensor([[0.0, 200.0, 120.0, 308.0], [400.0, 0.0, 550.0, 300.0]]))
    gt.gt_classes = torch.tensor([0, 2])
    masks = torch.zeros((2, 308, 550), dtype=torch.bool)
    masks[0, 200:308, 0:120] = True
    masks[1, 0:300, 400:550] = True
    gt.gt_masks = BitMasks(masks)
    padded = _pad_instances(gt, (312, 550))
    assert padded.image_size == (312, 550)
    assert torch.equal(padded.gt_masks.tensor[:, :308], masks)
    assert not padded.gt_masks.tensor[:, 308:].any()  # the semantic target there: background
    assert torch.equal(padded.gt_boxes.tensor, gt.gt_boxes.tensor)
    cfg = get_config("yolact_R_50_FPN_550.yaml")
    generator = YolactPriorGenerator(cfg)
    sizes = [(39, 69), (20, 35), (10, 18), (5, 9), (3, 5)]
    priors = generator(sizes, input_size=(312, 550))
    boxes = gt.gt_boxes.tensor / torch.tensor([550.0, 312, 550, 312])
    labels, _ = match_priors(boxes, gt.gt_classes, torch.zeros((0, 4)), priors, 0.5, 0.4, 0.7)
    top = (priors[:, 1] - priors[:, 3] / 2) * 312  # the prior's top edge in pixels
    assert (labels > 0).any()
    assert not (labels[top >= 308] > 0).any()  # priors that lie in the padding only


def test_detections_in_content():
    assembled = {
        "boxes": torch.tensor([[0.1, 0.2, 0.5, 0.75]]),
        "masks": torch.arange(2 * 78 * 138, dtype=torch.float32).reshape(2, 78, 138)[:1],
        "scores": torch.tensor([0.9]),
    }
    out = detections_in_content(assembled, (308, 550), (312, 550))
    torch.testing.assert_close(
        out["boxes"], torch.tensor([[0.1, 0.2 * 312 / 308, 0.5, 0.75 * 312 / 308]])
    )
    assert out["masks"].shape == (1, 77, 138)  # 308 / 4 prototype rows
    assert torch.equal(out["masks"], assembled["masks"][:, :77])
    assert torch.equal(out["scores"], assembled["scores"])
    with pytest.raises(ValueError, match="prototype pixel"):
        detections_in_content(assembled, (309, 550), (312, 550))


# ------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------
def _photo(height, width):
    from skimage.data import astronaut

    bgr = np.ascontiguousarray(astronaut()[:, :, ::-1])
    return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)


def _same_instances(a, b):
    assert len(a) == len(b) > 0
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
    assert torch.equal(a.scores, b.scores) and torch.equal(a.pred_classes, b.pred_classes)
    assert torch.equal(a.pred_masks, b.pred_masks)


def test_square_images_give_the_square_modes_detections():
    square, aspect = get_model(DEMO, seed=3), get_model(DEMO, ASPECT, seed=3)
    for image in (_photo(300, 300), _photo(550, 550)):
        inputs = [{"image": torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1)}]
        with torch.no_grad():
            _same_instances(square(inputs)[0]["instances"], aspect(inputs)[0]["instances"])


def test_batches_of_mixed_shapes_equal_single_images():
    model = get_model(DEMO, ASPECT, seed=3)
    images = [_photo(90, 160), _photo(160, 90), _photo(90, 160), _photo(120, 120)]
    inputs = [{"image": torch.from_numpy(i[:, :, ::-1].copy()).permute(2, 0, 1)} for i in images]
    with torch.no_grad():
        batch = model(inputs)
        for x, out in zip(inputs, batch):
            single = model([x])[0]["instances"]
            assert out["instances"].image_size == tuple(x["image"].shape[-2:])
            _same_instances(out["instances"], single)


def test_the_network_input_keeps_the_aspect_ratio():
    model = get_model("yolact_R_50_FPN_550.yaml", ASPECT)
    image = torch.zeros((3, 720, 1280), dtype=torch.uint8)
    images = model.preprocess_image([{"image": image}])
    assert tuple(images.tensor.shape) == (1, 3, 312, 550)
    assert images.image_sizes == [(308, 550)]
    assert (images.tensor[0, :, 308:] == 0).all()  # padding: the mean pixel, normalised
    outputs = model.predict(images)
    assert outputs["prototypes"].shape[-2:] == (78, 138)  # 312 / 4, 2 * ceil(550 / 8)
    assert outputs["input_size"] == (312, 550)


# ------------------------------------------------------------------------------------------
# Training and evaluation on wide and tall images
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wide_tall(tmp_path_factory):
    root = tmp_path_factory.mktemp("wide_tall")
    spec = SyntheticSpec(num_images=6, seed=5, layout="wide_tall")
    register_synthetic_split("aspect_test_wide_tall", str(root / "split"), spec)
    return "aspect_test_wide_tall"


def test_wide_tall_synthetic_images():
    spec = SyntheticSpec(num_images=2, seed=0, layout="wide_tall")
    assert spec.image_shape(0) == (90, 160) and spec.image_shape(1) == (160, 90)
    image, instances = render_synthetic_image(np.random.default_rng([0, 1]), spec, 1)
    assert image.shape == (160, 90, 3) and all(m.shape == (160, 90) for _, m in instances)
    # the square splits are the same images as before the layouts existed
    assert "layout" not in SyntheticSpec(num_images=1, seed=0).info()


def test_training_and_evaluation_keeping_the_aspect_ratio(wide_tall, tmp_path):
    cfg = get_config(
        DEMO,
        ASPECT
        + ["DATASETS.TRAIN", (wide_tall,), "DATASETS.TEST", (wide_tall,)]
        + ["SOLVER.MAX_ITER", 4, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.WARMUP_ITERS", 1]
        + ["DATALOADER.NUM_WORKERS", 0, "MODEL.YOLACT.TEST.SCORE_THRESH", 0.0, "SEED", 0],
    )
    cfg.OUTPUT_DIR = str(tmp_path)
    seen = []
    trainer = YolactTrainer(cfg)
    model = trainer.model
    original = model.forward_training

    def spy(outputs, batched_inputs):
        seen.append((outputs["input_size"], [tuple(x["image"].shape[-2:]) for x in batched_inputs]))
        losses = original(outputs, batched_inputs)
        assert all(torch.isfinite(v) for v in losses.values())
        return losses

    model.forward_training = spy
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert len(seen) == 4
    for input_size, shapes in seen:
        # wide images come in at 90 x 160 (already 160 long), tall ones at 160 x 90: each kept,
        # the batch padded to its largest member
        assert all(s in ((92, 160), (160, 92)) for s in shapes), shapes
        assert input_size == batch_input_size(shapes, 160)
    model.eval()
    results = inference_on_dataset(
        model,
        YolactTrainer.build_test_loader(cfg, wide_tall),
        COCOEvaluator(wide_tall, output_dir=str(tmp_path / "eval")),
    )
    assert {"bbox", "segm"} <= set(results) and math.isfinite(results["segm"]["AP"])


# ------------------------------------------------------------------------------------------
# Export, int8 and the demo
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def aspect_export(tmp_path_factory):
    from yolact_d2.benchmark.calibration import calibrate_detections
    from yolact_d2.deploy import export_model

    cfg = get_config(DEMO, ASPECT)
    model = get_model(DEMO, ASPECT, seed=1)
    frame = _photo(180, 320)
    # (the benchmark's calibration of random weights, on the padded aspect-ratio input)
    calibrate_detections(model, [frame[:, :, ::-1].copy(), _photo(320, 180)[:, :, ::-1].copy()])
    directory = str(tmp_path_factory.mktemp("aspect_export"))
    path = export_model(cfg, model, "onnx", directory, frame[:, :, ::-1].copy())
    return cfg, model, path, frame


def test_export_parity_keeping_the_aspect_ratio(aspect_export):
    from yolact_d2.deploy import ExportedPredictor
    from yolact_d2.deploy.metadata import read_metadata
    from yolact_d2.deploy.verify import pytorch_instances

    cfg, model, path, frame = aspect_export
    assert json.loads(read_metadata(path)["image_size"]) == [180, 320]
    expected = pytorch_instances(model, frame)
    for runtime in ("onnxruntime", "openvino"):
        got = ExportedPredictor(path, runtime=runtime)(frame)["instances"]
        assert len(got) == len(expected) > 0
        assert (got.pred_boxes.tensor - expected.pred_boxes.tensor).abs().max() <= 1
        agreement = (got.pred_masks == expected.pred_masks).float().mean()
        assert agreement >= 0.995, (runtime, float(agreement))
    with pytest.raises(ValueError, match="takes 180x320 images only"):
        ExportedPredictor(path)(_photo(100, 100))


def test_int8_keeping_the_aspect_ratio(aspect_export, tmp_path):
    from yolact_d2.deploy import ExportedPredictor
    from yolact_d2.deploy.quantize import quantize_int8

    _, _, path, frame = aspect_export
    # calibration images of other sizes are brought to the graph's one size
    int8 = quantize_int8(path, [_photo(300, 400), _photo(180, 320)], str(tmp_path / "m.xml"))
    instances = ExportedPredictor(int8, runtime="openvino")(frame)["instances"]
    assert instances.image_size == (180, 320) and len(instances) > 0


def test_demo_keeping_the_aspect_ratio(tmp_path):
    image = tmp_path / "wide.jpg"
    cv2.imwrite(str(image), _photo(180, 320))
    results = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "demo.py"), "--config-file",
         os.path.join(REPO_ROOT, "configs", DEMO), "--input", str(image), "--output-json",
         str(results), "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
         "MODEL.YOLACT.PRESERVE_ASPECT_RATIO", "True", "MODEL.YOLACT.TEST.SCORE_THRESH", "0.0"],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    detections = json.loads(results.read_text())
    assert detections
    for d in detections:
        x, y, w, h = d["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 320 and y + h <= 180
        assert d["segmentation"]["size"] == [180, 320]


def test_predictor_on_a_video_frame():
    cfg = get_config(DEMO, ASPECT)
    predictor = YolactPredictor(cfg)
    frame = _photo(720, 1280)
    one = predictor(frame)["instances"]
    batch = predictor([frame, frame])
    assert one.image_size == (720, 1280)
    for out in batch:
        _same_instances(out["instances"], one)


def test_benchmark_prints_the_network_input_of_each_image_size():
    from yolact_d2.benchmark.predictor import input_description

    aspect = get_config("yolact_R_50_FPN_550.yaml", ["MODEL.YOLACT.PRESERVE_ASPECT_RATIO", True])
    sizes = [(720, 1280), (720, 1280), (1280, 720), (480, 640)]
    # width x height: 1280 x 720 -> 550 x 309.4, 308 (a multiple of 4) padded to 312 (of 8)
    assert input_description(aspect, sizes) == "550x312/312x550/550x416"
    assert input_description(get_config("yolact_R_50_FPN_550.yaml"), sizes) == "550x550"
