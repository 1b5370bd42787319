# Copyright (c) yolact_d2 contributors.
"""
int8 post-training quantisation (NNCF, OpenVINO): the IR written by quantize_int8 and
tools/quantize.py carries the export's metadata, has int8 convolutions (and floating-point mask
assembly), runs through ExportedPredictor like the fp32 export, and agrees with fp32.
"""

import numpy as np
import os
import subprocess
import sys

import openvino
import pytest
import torch

from yolact_d2.deploy import INT8_FILE, ExportedPredictor, quantize_int8
from yolact_d2.deploy.stages import onnx_node_stages
from yolact_d2.deploy.verify import pytorch_instances
from yolact_d2.evaluation.mask_agreement import MaskAgreement

from common import REPO_ROOT, calibrate_detections, get_model, tiny_coco_images

# Small and quick; on random weights (calibrated to detect) int8 is far noisier than on trained
# ones, whose AP the benchmark measures (docs/BENCHMARKS.md: within 0.4 mask AP of fp32).
CONFIG = "demo/yolact_R_18_synthetic.yaml"


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
    """(model, onnx path, int8 path) for the calibrated R-18 (random weights). NNCF runs in a
    subprocess (tools/quantize.py): twice a pytest process that had run it crashed later."""
    model = get_model(CONFIG)
    train = tiny_coco_images("train2017", 8)
    calibrate_detections(model, [bgr[:, :, ::-1].copy() for bgr in train])
    out = tmp_path_factory.mktemp("int8")
    weights = out / "calibrated.pth"
    torch.save({"model": model.state_dict()}, weights)
    args = [
        sys.executable, os.path.join(REPO_ROOT, "tools", "quantize.py"),
        "--config-file", os.path.join(REPO_ROOT, "configs", CONFIG), "--output", str(out),
        "--calibration-dataset", "tiny_coco_train", "--calibration-images", "8",
        "--verify-images", "0", "MODEL.WEIGHTS", str(weights),
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return model, str(out / "model.onnx"), done.stdout.strip().splitlines()[-1]


def test_int8_ir_is_quantised_and_keeps_the_metadata(int8_export):
    _, onnx_path, path = int8_export
    assert path == os.path.join(os.path.dirname(onnx_path), INT8_FILE)
    assert os.path.isfile(path[: -len(".xml")] + ".bin")
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".int8_")]
    model = openvino.Core().read_model(path)
    ops = list(model.get_ordered_ops())
    convs = [op for op in ops if op.get_type_name() == "Convolution"]

    def int8_input(op, index=0):  # quantised, or max-pooled after quantisation (int8 either way)
        node = op.input_value(index).get_node()
        if node.get_type_name() == "MaxPool":
            node = node.input_value(0).get_node()
        return node.get_type_name() == "FakeQuantize"

    quantised = [
        op
        for op in convs
        if int8_input(op)
        and op.input_value(1).get_node().get_type_name() in ("FakeQuantize", "Convert", "Multiply")
    ]
    # Every convolution but the stem (3 input channels: the image) reads int8 activations.
    stems = [op for op in convs if op.input(0).get_partial_shape()[1].get_length() == 3]
    assert len(stems) == 1
    assert stems[0].get_friendly_name() not in {op.get_friendly_name() for op in quantised}
    assert len(convs) > 30 and len(quantised) == len(convs) - 1
    # The backbone's residual additions read int8 on both inputs; every other addition (the FPN,
    # the box decoding) stays in float.
    stages = onnx_node_stages(onnx_path)
    adds = [  # (not the convolutions' biases: an Add of a reshaped constant in the IR)
        op
        for op in ops
        if op.get_type_name() == "Add"
        and all(
            v.get_node().get_type_name() not in ("Constant", "Reshape") for v in op.input_values()
        )
    ]
    int8_adds = {op.get_friendly_name() for op in adds if int8_input(op, 0) and int8_input(op, 1)}
    backbone_adds = {
        op.get_friendly_name() for op in adds if stages[op.get_friendly_name()] == "backbone"
    }
    assert len(backbone_adds) == 8 and int8_adds == backbone_adds  # 8 basic blocks
    assert any(stages[op.get_friendly_name()] == "postprocess" for op in adds)
    for matmul in (op for op in ops if op.get_type_name() == "MatMul"):
        for value in matmul.input_values():
            assert value.get_node().get_type_name() != "FakeQuantize"
    predictor = ExportedPredictor(path, runtime="openvino")
    fp32 = ExportedPredictor(onnx_path, runtime="openvino")
    assert predictor.metadata["class_names"] == fp32.metadata["class_names"]
    assert predictor.metadata["config"] == fp32.metadata["config"]
    assert predictor.quantization["calibration_images"] == 8 and fp32.quantization is None
    assert predictor.quantization["float_convolutions"] == [stems[0].get_friendly_name()]
    assert backbone_adds <= set(predictor.quantization["int8_elementwise"])


def test_int8_agrees_with_fp32(int8_export):
    model, _, path = int8_export
    predictor = ExportedPredictor(path, runtime="openvino", num_threads=2)
    agreement = MaskAgreement()
    for bgr in tiny_coco_images("val2017", 6):
        ours = predictor(bgr)["instances"]
        assert set(ours.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_masks"}
        assert ours.image_size == bgr.shape[:2] and ours.pred_masks.dtype.is_floating_point is False
        agreement.add(pytorch_instances(model, bgr), ours)
    # Measured: 91.8% matched, mean mask IoU 0.73 (the calibrated random masks' logits sit near
    # the threshold); a broken pipeline (channel order, scales) matches almost nothing.
    assert agreement.num_reference > 300
    assert agreement.matched_fraction >= 0.85, agreement
    assert agreement.mean_iou >= 0.6, agreement


def test_int8_errors(int8_export, tmp_path):
    _, onnx_path, path = int8_export
    with pytest.raises(ValueError, match="runtime 'onnxruntime' cannot run"):
        ExportedPredictor(path, runtime="onnxruntime")
    with pytest.raises(ValueError, match="at least one calibration image"):
        quantize_int8(onnx_path, [], str(tmp_path / "x.xml"))
    bad = tmp_path / "bad.xml"
    bad.write_text("<not an IR")
    with pytest.raises(ValueError, match="not an OpenVINO IR"):
        ExportedPredictor(str(bad), runtime="openvino")


def test_quantize_tool_reports_bad_input(tmp_path):
    tool = os.path.join(REPO_ROOT, "tools", "quantize.py")
    cases = [
        (["--config-file", "missing.yaml", "--output", str(tmp_path)], "missing.yaml"),
        (
            ["--config-file", os.path.join(REPO_ROOT, "configs", CONFIG), "--output", str(tmp_path),
             "--onnx", str(tmp_path / "none.onnx")],
            "none.onnx",
        ),
    ]  # fmt: skip
    for args, needle in cases:
        done = subprocess.run([sys.executable, tool, *args], capture_output=True, text=True)
        assert done.returncode == 2 and needle in done.stderr and "Traceback" not in done.stderr


def test_quantize_tool_refuses_an_export_of_another_graph(int8_export, tmp_path):
    """--onnx with --graph: the export must hold that graph (not silently the other one)."""
    _, onnx_path, _ = int8_export  # a pipeline export
    args = [
        sys.executable, os.path.join(REPO_ROOT, "tools", "quantize.py"),
        "--config-file", os.path.join(REPO_ROOT, "configs", CONFIG), "--output", str(tmp_path),
        "--onnx", onnx_path, "--graph", "network",
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--onnx {onnx_path!r} holds the pipeline graph, not --graph network" in done.stderr
    assert not os.listdir(tmp_path)


def test_quantize_tool_end_to_end(tmp_path):
    """The tool exports (here the network graph), quantises on training images and compares
    with fp32 on test images."""
    tool = os.path.join(REPO_ROOT, "tools", "quantize.py")
    config = os.path.join(REPO_ROOT, "configs", "demo", "yolact_R_18_synthetic.yaml")
    args = [
        sys.executable, tool, "--config-file", config, "--output", str(tmp_path),
        "--calibration-images", "4", "--verify-images", "2", "--graph", "network",
        "MODEL.WEIGHTS", "", "MODEL.YOLACT.NUM_CLASSES", "80",
        "DATASETS.TRAIN", "('tiny_coco_train',)", "DATASETS.TEST", "('tiny_coco_val',)",
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    path = done.stdout.strip().splitlines()[-1]
    assert path == str(tmp_path / INT8_FILE) and os.path.isfile(tmp_path / "model.onnx")
    log = done.stdout + done.stderr
    assert "4 calibration images of tiny_coco_train" in log
    assert "int8 vs fp32 PyTorch on 2 images of tiny_coco_val" in log
    predictor = ExportedPredictor(path, runtime="openvino")
    assert predictor.quantization["calibration_images"] == 4
    assert predictor.graph == "network" and "priors" in predictor.output_names
    assert len(predictor.class_names) == 80


def test_activation_ranges_cover_every_calibration_image(int8_export):
    """
    Each int8 activation's range is the full range it takes over the calibration images (the
    min and max over all of them), not the mean of each image's min and max (NNCF's default,
    which clipped the trained R50-320's activations and cost it 4.5 mask AP): run the fp32
    model on the 8 calibration images, read every quantised tensor, compare with the ranges.
    """
    from yolact_d2.benchmark import dataset_image_files, load_images
    from yolact_d2.data.image_io import in_input_format

    _, onnx_path, path = int8_export
    predictor = ExportedPredictor(path, runtime="openvino")
    assert predictor.quantization["activation_ranges"] == "MINMAX"
    core = openvino.Core()
    ir = core.read_model(path)
    activations = {}  # the quantised fp32 tensor's (op name, output index) -> its FakeQuantize
    for op in ir.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        source = op.input_value(0)
        if source.get_node().get_type_name() in ("Constant", "Convert"):
            continue  # a weight
        activations[(source.get_node().get_friendly_name(), source.get_index())] = op
    assert len(activations) > 20
    fp32 = core.read_model(onnx_path)
    by_name = {op.get_friendly_name(): op for op in fp32.get_ordered_ops()}
    keys = sorted(activations)
    fp32.add_outputs([by_name[name].output(index) for name, index in keys])
    compiled = core.compile_model(fp32, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    lows, highs = [], []
    for bgr in load_images(dataset_image_files("tiny_coco_train", 8)):
        outputs = compiled({"image": in_input_format(bgr, predictor.input_format)})
        values = list(outputs.values())[-len(keys) :]
        lows.append([float(v.min()) for v in values])
        highs.append([float(v.max()) for v in values])
    lows, highs = np.array(lows), np.array(highs)  # (images, tensors)
    clipped_by_a_mean = 0
    for j, key in enumerate(keys):
        fq = activations[key]
        low = float(fq.input_value(1).get_node().get_data().min())
        high = float(fq.input_value(2).get_node().get_data().max())
        tolerance = 1e-3 * max(abs(low), abs(high))
        # Symmetric int8 ranges: the side the data does not reach may be wider, never narrower.
        assert low <= lows[:, j].min() + tolerance and high >= highs[:, j].max() - tolerance, key
        # The range ends where the data does (not wider than the larger of its two extremes).
        extent = max(-lows[:, j].min(), highs[:, j].max())
        assert max(-low, high) == pytest.approx(extent, rel=2e-2), key
        clipped_by_a_mean += highs[:, j].mean() < highs[:, j].max() * 0.99
    # The mean of the images' maxima falls short of the maximum on most tensors: MEAN_MINMAX
    # ranges would fail the assertions above.
    assert clipped_by_a_mean > len(keys) // 2, clipped_by_a_mean
