# Copyright (c) yolact_d2 contributors.
"""
The network-only export (``tools/export_model.py --graph network``): the graph holds the
network and its priors, and ExportedPredictor runs the model's own post-processing after it.
Exact on PyTorch (.pt2), the same detections on onnxruntime and OpenVINO, square and
aspect-preserving, quantisable, refused for YOLACT++ with a clear error.
"""

import json
import os
import subprocess
import sys

import cv2
import onnx
import pytest
import torch

from yolact_d2.deploy import ExportedPredictor, YolactNetworkGraph, export_model, read_metadata
from yolact_d2.deploy.verify import compare_with_pytorch, pytorch_instances
from yolact_d2.evaluation.mask_agreement import MaskAgreement

from common import REPO_ROOT, calibrate_detections, get_config, get_model, tiny_coco_images

CONFIG = "demo/yolact_R_18_synthetic.yaml"
ASPECT = ["MODEL.YOLACT.PRESERVE_ASPECT_RATIO", True]


def _model(opts=()):
    model = get_model(CONFIG, list(opts))
    calibrate_detections(
        model, [bgr[:, :, ::-1].copy() for bgr in tiny_coco_images("train2017", 8)]
    )
    return model


def _assert_same_instances(got, expected):
    assert got.image_size == expected.image_size
    assert len(expected) > 0
    for field in ("scores", "pred_classes", "pred_masks"):
        assert torch.equal(got.get(field), expected.get(field)), field
    assert torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)


@pytest.fixture(scope="module")
def network_export(tmp_path_factory):
    """(model, onnx path) of the calibrated R-18's network graph."""
    model = _model()
    out = str(tmp_path_factory.mktemp("network"))
    return model, export_model(get_config(CONFIG), model, "onnx", out, graph="network")


def test_network_graph_holds_the_network_only(network_export):
    model, path = network_export
    meta = read_metadata(path)
    assert meta["graph"] == "network"
    assert json.loads(meta["outputs"]) == list(YolactNetworkGraph.OUTPUTS)
    op_types = {node.op_type for node in onnx.load(path).graph.node}
    assert "Conv" in op_types and not op_types & {"TopK", "NonZero"}  # no NMS in the graph
    rgb = tiny_coco_images("val2017", 1)[0][:, :, ::-1].copy()
    outputs = ExportedPredictor(path).run(rgb)
    with torch.no_grad():
        image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
        expected = model.predict(model.normalize(model.resize_to_input(image)))
    for name in YolactNetworkGraph.OUTPUTS:
        want = expected[name] if name == "priors" else expected[name][0]
        got = torch.from_numpy(outputs[name])
        assert got.shape == want.shape, name
        torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4, msg=name)


def test_network_graph_on_pytorch_is_the_model_exactly(network_export, tmp_path):
    model, _ = network_export
    path = export_model(get_config(CONFIG), model, "pt2", str(tmp_path), graph="network")
    predictor = ExportedPredictor(path, runtime="pytorch")
    for bgr in tiny_coco_images("val2017", 4):
        _assert_same_instances(predictor(bgr)["instances"], pytorch_instances(model, bgr))


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_network_graph_same_detections_on_the_runtimes(network_export, runtime):
    model, path = network_export
    agreement = compare_with_pytorch(model, path, runtime, tiny_coco_images("val2017", 6))
    assert agreement.num_reference > 300
    assert agreement.one_to_one_fraction >= 0.99, agreement
    assert agreement.mean_iou >= 0.99, agreement


def test_network_graph_keeping_the_aspect_ratio(tmp_path):
    model = _model(ASPECT)
    bgr = cv2.resize(tiny_coco_images("val2017", 1)[0], (320, 180))
    image = bgr[:, :, ::-1].copy()
    cfg = get_config(CONFIG, ASPECT)
    pt2 = export_model(cfg, model, "pt2", str(tmp_path / "pt2"), image, graph="network")
    onnx_path = export_model(cfg, model, "onnx", str(tmp_path / "onnx"), image, graph="network")
    assert json.loads(read_metadata(onnx_path)["image_size"]) == [180, 320]
    frames = [bgr, cv2.resize(tiny_coco_images("val2017", 2)[1], (320, 180))]
    for frame in frames:
        _assert_same_instances(
            ExportedPredictor(pt2, runtime="pytorch")(frame)["instances"],
            pytorch_instances(model, frame),
        )
    agreement = compare_with_pytorch(model, onnx_path, "onnxruntime", frames)
    assert agreement.num_reference > 100 and agreement.one_to_one_fraction >= 0.99, agreement
    with pytest.raises(ValueError, match="takes 180x320 images only"):
        ExportedPredictor(onnx_path)(tiny_coco_images("val2017", 1)[0])


def test_network_graph_quantises_to_int8(network_export, tmp_path):
    """tools/quantize.py on a network graph (in a subprocess, as tests/test_quantize.py runs
    NNCF): int8 convolutions, the network metadata kept, detections close to fp32's."""
    model, path = network_export
    weights = tmp_path / "calibrated.pth"
    torch.save({"model": model.state_dict()}, weights)
    proc = subprocess.run(
        [
            sys.executable, os.path.join(REPO_ROOT, "tools", "quantize.py"),
            "--config-file", os.path.join(REPO_ROOT, "configs", CONFIG),
            "--output", str(tmp_path), "--onnx", path, "--calibration-dataset",
            "tiny_coco_train", "--calibration-images", "8", "--verify-images", "0",
            "MODEL.WEIGHTS", str(weights),
        ],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    int8 = proc.stdout.strip().splitlines()[-1]
    predictor = ExportedPredictor(int8, runtime="openvino", num_threads=2)
    assert predictor.graph == "network" and predictor.quantization["calibration_images"] == 8
    agreement = MaskAgreement()
    for bgr in tiny_coco_images("val2017", 6):
        agreement.add(pytorch_instances(model, bgr), predictor(bgr)["instances"])
    # As the pipeline's int8 model (tests/test_quantize.py: 91.8% matched, mask IoU 0.73 on these
    # calibrated random weights); a broken network graph or post-processing matches almost none.
    assert agreement.num_reference > 300
    assert agreement.matched_fraction >= 0.85, agreement
    assert agreement.mean_iou >= 0.6, agreement


def test_yolact_plus_has_no_network_graph():
    model = get_model("yolact_plus_R_50_FPN_550.yaml", ["MODEL.YOLACT.INPUT_SIZE", 256])
    with pytest.raises(ValueError, match="YOLACT\\+\\+ re-scores its masks"):
        YolactNetworkGraph(model)
    config = os.path.join(REPO_ROOT, "configs", "yolact_plus_R_50_FPN_550.yaml")
    proc = subprocess.run(
        [
            sys.executable, os.path.join(REPO_ROOT, "tools", "export_model.py"),
            "--config-file", config, "--output", "unused", "--graph", "network",
            "MODEL.WEIGHTS", "",
        ],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: the network graph")
    assert not os.path.exists(os.path.join(REPO_ROOT, "unused"))


def test_standalone_runner_refuses_a_network_graph(network_export, tmp_path):
    _, path = network_export
    image = tmp_path / "image.jpg"
    cv2.imwrite(str(image), tiny_coco_images("val2017", 1)[0])
    proc = subprocess.run(
        [
            sys.executable, os.path.join(REPO_ROOT, "tools", "onnx_inference.py"),
            path, "--input", str(image), "--output", str(tmp_path / "out"),
        ],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "holds the network only (exported with --graph network)" in proc.stderr
    assert "Traceback" not in proc.stderr
