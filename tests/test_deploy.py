# Copyright (c) yolact_d2 contributors.
"""
Export of the whole YOLACT pipeline (ONNX, torch.export) and the exported model on onnxruntime,
OpenVINO and PyTorch: parity with the PyTorch model on calibrated random weights and real
images, the operator translations, the metadata, the tools (the standalone runner without
PyTorch).
"""

import gc
import glob
import json
import numpy as np
import os
import shutil
import signal
import subprocess
import sys

import cv2
import onnx
import onnxruntime
import openvino
import pytest
import torch
from test_nms import random_candidates

from yolact_d2.data.datasets import tiny_coco_root
from yolact_d2.deploy import (
    ExportedPredictor,
    YolactInferenceGraph,
    export_model,
    export_onnx,
    read_metadata,
)
from yolact_d2.deploy.export import program_to_onnx
from yolact_d2.deploy.onnx_ops import DECOMPOSITIONS, MIN_OPSET, MIN_OPSET_DEFORMABLE
from yolact_d2.deploy.verify import compare_with_pytorch, pytorch_instances
from yolact_d2.evaluation.mask_agreement import match_detections
from yolact_d2.layers import fast_nms
from yolact_d2.utils.signal_stack import current_signal_stack, preserved_signal_stack

from common import REPO_ROOT, calibrate_detections, get_config, get_model

# R50 at 550, the DarkNet-53 backbone, and ResNet-101 at another input size (R101-550 adds
# nothing these do not: the same operators as R50 with more blocks, at R50's size).
PARITY_CONFIGS = [
    "yolact_R_50_FPN_550.yaml",
    "yolact_DarkNet53_FPN_550.yaml",
    "yolact_R_101_FPN_400.yaml",
]
# DarkNet-53 runs at 400 here (its operators do not depend on the size; half the time).
PARITY_OPTS = {"yolact_DarkNet53_FPN_550.yaml": ["MODEL.YOLACT.INPUT_SIZE", 400]}


def _read(paths):
    return [cv2.imread(p) for p in paths]


def calibration_images():
    """Eight tiny_coco train images, RGB (the configs' INPUT.FORMAT)."""
    files = sorted(glob.glob(os.path.join(tiny_coco_root(), "train2017", "*.jpg")))[:8]
    return [bgr[:, :, ::-1].copy() for bgr in _read(files)]


def parity_images():
    """Six tiny_coco val images (BGR, several sizes) and three more shapes cut from one."""
    files = sorted(glob.glob(os.path.join(tiny_coco_root(), "val2017", "*.jpg")))[:6]
    images = _read(files)
    wide = cv2.resize(images[0], (900, 200))  # 4.5 : 1
    tall = cv2.resize(images[1], (180, 760))  # 1 : 4.2
    square = cv2.resize(images[2], (550, 550))  # exactly S x S: the resize is the identity
    return images + [wide, tall, square]


def calibrated_model(config, seed=0, opts=()):
    model = get_model(config, opts, seed=seed)
    calibrate_detections(model, calibration_images())
    return model


def assert_non_degenerate(model, images):
    """The PyTorch detections are a meaningful comparison: confident, sized, with real masks."""
    scores, sides, fills = [], [], []
    for bgr in images:
        inst = pytorch_instances(model, bgr)
        assert len(inst) > 0
        boxes = inst.pred_boxes.tensor
        area = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1).clamp(min=1)
        fill = inst.pred_masks.flatten(1).sum(dim=1) / area
        scores.append(inst.scores)
        sides.append((boxes[:, 2:] - boxes[:, :2]).min(dim=1).values)
        fills.append(fill)
    scores, sides, fills = torch.cat(scores), torch.cat(sides), torch.cat(fills)
    assert scores.max() > 0.9 and scores.median() < 0.99, "scores saturated or not confident"
    assert len(set(scores.tolist())) > 0.9 * len(scores), "scores tie"
    assert sides.median() >= 16, "boxes degenerate"
    assert (fills == 0).float().mean() < 0.5, "masks mostly empty"
    assert (fills > 0.98).float().mean() < 0.6, "masks mostly full"
    assert ((fills > 0.02) & (fills < 0.98)).float().mean() > 0.15, "masks all-or-nothing"


@pytest.fixture(scope="module")
def r50_export(tmp_path_factory):
    """(model, path): the calibrated R50 model and its ONNX export."""
    config = PARITY_CONFIGS[0]
    model = calibrated_model(config)
    out = str(tmp_path_factory.mktemp("r50"))
    return model, export_model(get_config(config), model, "onnx", out, config_file=config)


@pytest.mark.parametrize("config", PARITY_CONFIGS)
def test_onnx_parity_with_pytorch_on_both_runtimes(config, r50_export, tmp_path):
    if config == PARITY_CONFIGS[0]:
        model, path = r50_export
    else:
        opts = PARITY_OPTS.get(config, [])
        model = calibrated_model(config, opts=opts)
        path = export_model(get_config(config, opts), model, "onnx", str(tmp_path))
    images = parity_images()
    assert_non_degenerate(model, images)
    for runtime in ("onnxruntime", "openvino"):
        agreement = compare_with_pytorch(model, path, runtime, images)
        assert agreement.num_reference > 500
        assert agreement.one_to_one_fraction >= 0.99, f"{runtime}: {agreement}"
        assert agreement.mean_iou >= 0.99, f"{runtime}: {agreement}"


def test_graph_refuses_what_it_cannot_export():
    model = get_model(PARITY_CONFIGS[0], ["MODEL.YOLACT.TEST.NMS_TYPE", "traditional"])
    with pytest.raises(ValueError, match="NMS_TYPE 'fast'"):
        YolactInferenceGraph(model)
    model = get_model(PARITY_CONFIGS[0], ["MODEL.YOLACT.FAST_CPU_INFERENCE", True])
    with pytest.raises(ValueError, match="FAST_CPU_INFERENCE"):
        YolactInferenceGraph(model)


def test_onnx_file_metadata_and_operators(r50_export):
    model, path = r50_export
    proto = onnx.load(path)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [MIN_OPSET]
    domains = {node.domain for node in proto.graph.node}
    assert domains <= {"", "ai.onnx"}, f"non-standard operators: {domains}"
    assert not proto.functions
    op_types = {node.op_type for node in proto.graph.node}
    assert {"TopK", "NonZero", "Resize", "Conv"} <= op_types
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, True, False] and dims[2].dim_value == 3
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    meta = read_metadata(path)
    assert meta["input_format"] == "RGB" and meta["input_size"] == "550"
    assert json.loads(meta["outputs"]) == ["boxes", "scores", "classes", "masks"]
    names, ids = json.loads(meta["class_names"]), json.loads(meta["category_ids"])
    assert len(names) == len(ids) == 80 and names[0] == "person" and names[-1] == "toothbrush"
    assert ids[:3] == [1, 2, 3] and ids[-1] == 90  # COCO's ids, with their gaps
    assert float(meta["score_threshold"]) == 0.05 and meta["top_k"] == "200"
    assert meta["detections_per_image"] == "100" and float(meta["mask_threshold"]) == 0.5
    assert meta["config_file"] == PARITY_CONFIGS[0] and meta["deformable_conv"] == "false"
    assert "RESNETS:" in meta["config"]


def test_pt2_export_runs_on_pytorch_exactly(tmp_path, r50_export):
    model, _ = r50_export
    path = export_model(get_config(PARITY_CONFIGS[0]), model, "pt2", str(tmp_path))
    assert read_metadata(path)["input_format"] == "RGB"
    predictor = ExportedPredictor(path, runtime="pytorch")
    for bgr in parity_images()[:3]:
        expected = pytorch_instances(model, bgr)
        got = predictor(bgr)["instances"]
        assert got.image_size == expected.image_size
        for field in ("scores", "pred_classes", "pred_masks"):
            assert torch.equal(got.get(field), expected.get(field)), field
        assert torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)


def test_yolact_plus_exports_for_onnxruntime_and_openvino_says_why_not(tmp_path):
    config = "yolact_plus_R_50_FPN_550.yaml"
    model = get_model(config)
    torch.manual_seed(1)
    for module in model.modules():  # deform for real: non-zero offsets
        if hasattr(module, "conv_offset_mask"):
            torch.nn.init.normal_(module.conv_offset_mask.weight, std=0.02)
    calibrate_detections(model, calibration_images())
    path = export_model(get_config(config), model, "onnx", str(tmp_path))
    proto = onnx.load(path)
    assert [o.version for o in proto.opset_import if o.domain == ""] == [MIN_OPSET_DEFORMABLE]
    assert "DeformConv" in {node.op_type for node in proto.graph.node}
    meta = read_metadata(path)
    assert meta["deformable_conv"] == "true" and json.loads(meta["outputs"])[-1] == "mask_scores"
    images = parity_images()[:4]
    agreement = compare_with_pytorch(model, path, "onnxruntime", images)
    assert agreement.num_reference > 300
    assert agreement.one_to_one_fraction >= 0.99, str(agreement)
    assert agreement.mean_iou >= 0.99, str(agreement)
    got = ExportedPredictor(path)(images[0])["instances"]
    expected = pytorch_instances(model, images[0])
    pairs = match_detections(expected, got, score_tolerance=1e-3, box_tolerance=1)
    i, j = (list(t) for t in zip(*pairs))
    assert (expected.mask_scores[i] - got.mask_scores[j]).abs().max() < 1e-3
    with pytest.raises(ValueError, match="DeformConv"):
        ExportedPredictor(path, runtime="openvino")
    with pytest.raises(ValueError, match="at least 19"):
        export_onnx(model, str(tmp_path / "low.onnx"), meta, opset=18)


def _onnx_of(module, args, dynamic_shapes, input_names, output_names, path):
    program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)
    proto = program_to_onnx(program, MIN_OPSET, input_names, output_names)
    onnx.save(proto, path)
    ort = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    with preserved_signal_stack():  # see yolact_d2.utils.signal_stack
        ov = openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return (
        lambda feeds: ort.run(None, feeds),
        lambda feeds: [v for v in ov(feeds).values()],
    )


class _StableSort(torch.nn.Module):
    def forward(self, x):
        down = torch.sort(x, dim=1, descending=True, stable=True)
        up = torch.sort(x, dim=0, stable=True)
        last = torch.sort(x, dim=-1, descending=True, stable=True)
        return down.values, down.indices, up.values, up.indices, last.values, last.indices


def test_stable_sort_becomes_topk_with_the_same_order_of_ties(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (5, 37), generator=g).float()  # many equal values
    n = torch.export.Dim("n", min=2)
    names = ["dv", "di", "uv", "ui", "lv", "li"]
    runtimes = _onnx_of(
        _StableSort(), (x,), {"x": {1: n}}, ["x"], names, str(tmp_path / "sort.onnx")
    )
    for count in (37, 2, 300):
        x = torch.randint(0, 4, (5, count), generator=g).float()
        expected = [t.numpy() for t in _StableSort()(x)]
        for run in runtimes:
            got = run({"x": x.numpy()})
            for name, a, b in zip(names, got, expected):
                assert np.array_equal(a, b), (name, count)


class _FastNms(torch.nn.Module):
    def __init__(self, max_num_detections=100):
        super().__init__()
        self.max_num_detections = max_num_detections

    def forward(self, boxes, scores):
        return fast_nms(boxes, scores, 0.5, 200, self.max_num_detections)


def _nms_runtimes(tmp_path, max_num_detections):
    boxes, scores = random_candidates(300, 80, 2)
    n = torch.export.Dim("candidates", min=2)
    path = str(tmp_path / f"nms{max_num_detections}.onnx")
    runtimes = _onnx_of(
        _FastNms(max_num_detections),
        (boxes, scores),
        {"boxes": {0: n}, "scores": {1: n}},
        ["boxes", "scores"],
        ["scores_out", "classes", "indices"],
        path,
    )
    assert {node.domain for node in onnx.load(path).graph.node} <= {""}
    return runtimes


def test_fast_nms_op_decomposes_to_standard_onnx_exactly(tmp_path):
    assert torch.ops.yolact_d2.fast_nms.default in DECOMPOSITIONS
    runtimes = _nms_runtimes(tmp_path, 100)
    for count, seed in ((150, 3), (700, 4), (2, 5), (2539, 7)):
        boxes, scores = random_candidates(count, 80, seed)
        expected = [t.numpy() for t in fast_nms(boxes, scores, 0.5, 200, 100)]
        assert len(expected[0]) > 0
        for run in runtimes:
            got = run({"boxes": boxes.numpy(), "scores": scores.numpy()})
            for a, b in zip(got, expected):
                np.testing.assert_array_equal(a, b)


def test_fast_nms_on_tied_scores_keeps_the_same_detections(tmp_path):
    """
    With equal scores the per-class ranking decides what is kept (equal scores in candidate
    order, as the stable sort); the final ranking across classes of equal scores is not defined
    (the reference's is a non-stable sort), so the kept detections are compared as a set,
    without the per-image cap.
    """
    runtimes = _nms_runtimes(tmp_path, 100000)
    boxes, scores = random_candidates(400, 80, 6)
    scores = (scores * 8).floor() / 8  # ~50 equal scores per class and value
    expected = fast_nms(boxes, scores, 0.5, 200, 100000)
    expected = sorted(zip(*(t.tolist() for t in expected)))
    assert len(expected) > 100
    for run in runtimes:
        got = run({"boxes": boxes.numpy(), "scores": scores.numpy()})
        assert sorted(zip(*(a.tolist() for a in got))) == expected


_BLOCK_TORCH = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "detectron2", "yolact_d2"):
            raise ImportError("blocked for this test: " + name)
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run_standalone(path, *args):
    runner = os.path.join(REPO_ROOT, "tools", "onnx_inference.py")
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_TORCH, runner, path, *args], capture_output=True, text=True
    )


def test_standalone_runner_needs_no_torch(r50_export, tmp_path):
    model, path = r50_export
    files = sorted(glob.glob(os.path.join(tiny_coco_root(), "val2017", "*.jpg")))[:2]
    inputs = tmp_path / "in"
    os.makedirs(inputs / "nested")
    for i, f in enumerate(files):
        shutil.copy(f, inputs / ("nested" if i else "") / os.path.basename(f))
    (inputs / "broken.jpg").write_bytes(b"not an image")
    (inputs / "notes.txt").write_text("not an image either, and not an image extension")
    out = tmp_path / "out"
    proc = _run_standalone(
        path, "--input", str(inputs), "nowhere.jpg", "--output", str(out),
        "--confidence-threshold", "0.9",
    )  # fmt: skip
    # one unreadable image and one missing input: both reported, the rest processed, exit 1
    assert proc.returncode == 1, proc.stderr
    assert "broken.jpg: cannot read this image" in proc.stderr
    assert "input 'nowhere.jpg' does not exist, skipped" in proc.stderr
    assert "Traceback" not in proc.stderr
    results = json.loads((out / "detections.json").read_text())
    predictor = ExportedPredictor(path)
    from pycocotools import mask as mask_util

    below = 0
    for f in files:
        name = os.path.basename(f)
        assert (out / (os.path.splitext(name)[0] + ".png")).is_file()
        mine = [r for r in results if r["file_name"] == name]
        assert all(r["image_id"] == int(os.path.splitext(name)[0]) for r in mine)
        inst = predictor(cv2.imread(f))["instances"]
        # the json keeps every detection, as demo.py --output-json; the threshold only draws
        assert len(mine) == len(inst) > 0
        drawn = int((inst.scores >= 0.9).sum())
        assert f"{name}: {len(inst)} detections, {drawn} drawn" in proc.stdout
        below += len(inst) - drawn
        category_ids = json.loads(read_metadata(path)["category_ids"])
        ious = []
        for r, box, score, cls, mask in zip(
            mine, inst.pred_boxes.tensor, inst.scores, inst.pred_classes, inst.pred_masks
        ):
            x, y, w, h = r["bbox"]
            assert np.allclose([x, y, x + w, y + h], box.tolist())
            assert abs(r["score"] - float(score)) < 1e-6
            assert r["category_id"] == category_ids[int(cls)]
            decoded = mask_util.decode(r["segmentation"]).astype(bool)
            inter, union = (decoded & mask.numpy()).sum(), (decoded | mask.numpy()).sum()
            ious.append(inter / union if union else 1.0)  # both empty: the same mask
        assert np.mean(ious) >= 0.99  # OpenCV's bilinear paste against PyTorch's
    assert below > 0  # in the json, not drawn


def test_standalone_runner_numbers_images_as_an_annotations_file(r50_export, tmp_path):
    _, path = r50_export
    files = sorted(glob.glob(os.path.join(tiny_coco_root(), "val2017", "*.jpg")))[:2]
    inputs = tmp_path / "in"
    os.makedirs(inputs)
    for i, f in enumerate(files):
        shutil.copy(f, inputs / f"photo_{i}.jpg")  # names without a COCO number
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps({"images": [{"id": 7001, "file_name": "a/photo_0.jpg"}]}))
    out = tmp_path / "out"
    proc = _run_standalone(
        path, "--input", str(inputs), "--output", str(out), "--image-ids-from", str(annotations)
    )
    assert proc.returncode == 1, proc.stderr  # photo_1.jpg is not in the annotations
    assert f"photo_1.jpg: not an image of {annotations}, skipped" in proc.stderr
    results = json.loads((out / "detections.json").read_text())
    assert results and {r["image_id"] for r in results} == {7001}
    assert {r["file_name"] for r in results} == {"photo_0.jpg"}
    proc = _run_standalone(path, "--input", str(inputs), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    ids = {r["file_name"]: r["image_id"] for r in json.loads((out / "detections.json").read_text())}
    assert ids == {"photo_0.jpg": 0, "photo_1.jpg": 1}  # without it: the position among the inputs
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    proc = _run_standalone(path, "--input", str(inputs), "--output", str(out), "--image-ids-from",
                           str(bad))  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: --image-ids-from")
    assert "Traceback" not in proc.stderr


def _tool(*args):
    return subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "export_model.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )


def test_export_tool_writes_and_verifies(tmp_path):
    config = os.path.join(REPO_ROOT, "configs", "yolact_R_50_FPN_550.yaml")
    sample = sorted(glob.glob(os.path.join(tiny_coco_root(), "val2017", "*.jpg")))[0]
    proc = _tool(
        "--config-file", config, "--output", str(tmp_path), "--sample-image", sample,
        "MODEL.WEIGHTS", "",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "model.onnx")
    assert "onnxruntime vs PyTorch on the sample image" in proc.stdout + proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]  # nothing half-written left
    assert read_metadata(str(tmp_path / "model.onnx"))["config_file"] == config


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--config-file", "missing.yaml", "--output", "x"],
            "config file 'missing.yaml' does not exist",
        ),
        (
            ["--config-file", "configs/yolact_R_50_FPN_550.yaml", "--output", "x"]
            + ["MODEL.WEIGHTS", "nowhere.pth"],
            "MODEL.WEIGHTS 'nowhere.pth' does not exist",
        ),
        (
            ["--config-file", "configs/yolact_R_50_FPN_550.yaml", "--output", "x"]
            + ["--sample-image", "none.jpg", "MODEL.WEIGHTS", ""],
            "sample image 'none.jpg' does not exist",
        ),
    ],
)
def test_export_tool_bad_input_is_one_clear_line(args, message):
    proc = _tool(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert "Traceback" not in proc.stderr


def test_exported_predictor_bad_input(tmp_path, r50_export):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        ExportedPredictor(str(tmp_path / "missing.onnx"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="bad.onnx"):
        ExportedPredictor(str(bad))
    _, path = r50_export
    with pytest.raises(ValueError, match="runtime"):
        ExportedPredictor(path, runtime="tensorrt")
    with pytest.raises(ValueError, match="pt2"):
        ExportedPredictor(path, runtime="pytorch")
    predictor = ExportedPredictor(path)
    with pytest.raises(ValueError, match="uint8"):
        predictor.run(np.zeros((10, 10, 3), np.float32))


_FIFO_THEN_SIGNAL = """
import gc, os, signal, sys, time
# Python's own SIGINT handler, whatever this process inherited (a child of a background job of a
# non-interactive shell starts with SIGINT ignored, and Python then installs no handler).
signal.signal(signal.SIGINT, signal.default_int_handler)
import faulthandler
faulthandler.enable()  # its handlers run on the alternate stack, as Python's do
import openvino
from yolact_d2.deploy import ExportedPredictor
path, raw = sys.argv[1], sys.argv[2] == "raw"
make = (lambda: openvino.Core().compile_model(path, "CPU")) if raw else (
    lambda: ExportedPredictor(path, runtime="openvino"))
a, b = make(), make()
del a; gc.collect(); del b; gc.collect()  # destroyed in the order they were made
try:
    os.kill(os.getpid(), signal.SIGINT)  # Python's handler runs on the alternate stack
    time.sleep(1)
except KeyboardInterrupt:
    print("handled")
"""


def _fifo_then_signal(path: str, how: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _FIFO_THEN_SIGNAL, path, how], capture_output=True, text=True,
        cwd=REPO_ROOT,
    )  # fmt: skip


def test_openvino_models_leave_the_threads_signal_stack_as_it_was(r50_export):
    """The segmentation fault of earlier full test runs, found: OpenVINO's CPU plugin gives the
    compiling thread its own alternate signal stack and, when the model is destroyed, puts back
    the one before it; two models destroyed in the order they were made leave the thread a
    freed stack, and the next signal handled on it corrupts memory or crashes (see
    yolact_d2.utils.signal_stack). ExportedPredictor keeps the thread's stack as it was."""
    _, path = r50_export
    before = current_signal_stack()
    assert before is not None  # Linux: the stack can be read
    # The plugin's behaviour, raw (if these fail, OpenVINO stopped changing the thread's stack
    # and preserved_signal_stack can go).
    with preserved_signal_stack():  # puts this process's stack back afterwards
        first = openvino.Core().compile_model(path, "CPU")
        assert current_signal_stack() != before
        second = openvino.Core().compile_model(path, "CPU")
        plugin_stack = current_signal_stack()
        del first, second
        gc.collect()
        assert current_signal_stack() not in (before, plugin_stack)  # the first's, freed
    assert current_signal_stack() == before
    raw = _fifo_then_signal(path, "raw")
    assert raw.returncode == -signal.SIGSEGV, (raw.returncode, raw.stderr[-2000:])
    # Through ExportedPredictor the stack never changes, and the same process survives.
    a = ExportedPredictor(path, runtime="openvino")
    b = ExportedPredictor(path, runtime="openvino")
    assert current_signal_stack() == before
    del a, b
    gc.collect()
    assert current_signal_stack() == before
    done = _fifo_then_signal(path, "predictor")
    assert done.returncode == 0 and "handled" in done.stdout, done.stderr[-2000:]
