# Copyright (c) yolact_d2 contributors.
"""
tools/demo.py (images, folders, datasets, video, webcam, COCO json, polygons, batches),
YolactPredictor's batched prediction and the prototype view, on a model trained here.
"""

import contextlib
import io
import json
import numpy as np
import os
import re
import shutil
import subprocess
import sys

import cv2
import pytest
import torch
from test_demo import load_demo_script

from yolact_d2.data.synthetic import SyntheticSpec, ensure_synthetic_split
from yolact_d2.engine import YolactPredictor
from yolact_d2.engine.inference_demo import DemoInputError, list_image_files
from yolact_d2.engine.prototypes import prototype_view, render_prototype_view
from yolact_d2.utils.polygons import mask_to_polygons

from common import REPO_ROOT, calibrate_batch_norm, get_config

CONFIG = os.path.join(REPO_ROOT, "configs", "demo", "yolact_R_18_synthetic.yaml")
SPLIT = "demo_tool_split"


def _run(script, *args):
    return subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", script), *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(weights, register_opts, image_dir): the demo model overfitted to 8 synthetic images."""
    root = tmp_path_factory.mktemp("demo_tool")
    json_file, image_dir = ensure_synthetic_split(str(root / "split"), SyntheticSpec(8, seed=3))
    register = ["DATASETS.REGISTER_COCO", f"[['{SPLIT}', '{json_file}', '{image_dir}']]"]
    opts = register + [
        "DATASETS.TRAIN", f"('{SPLIT}',)",
        "DATASETS.TEST", f"('{SPLIT}',)",
        "SOLVER.MAX_ITER", "150",
        "SOLVER.IMS_PER_BATCH", "4",
        "MODEL.DEVICE", "cpu",
        "OUTPUT_DIR", str(root / "train"),
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        load_demo_script().main(opts)
    return str(root / "train" / "model_final.pth"), register, image_dir


def _copypaste_ap(text, task):
    """The AP of ``task`` from Detectron2's "copypaste:" lines of an evaluation log."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.endswith(f"copypaste: Task: {task}"):
            return float(lines[i + 2].split("copypaste: ")[1].split(",")[0])
    raise AssertionError(f"no {task} AP in the log")


def _cocoeval_ap(json_file, results, task):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_file)
        evaluation = COCOeval(gt, gt.loadRes(results), task)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return 100 * evaluation.stats[0]


def test_dataset_json_gives_the_ap_of_eval_only(trained, tmp_path):
    weights, register, image_dir = trained
    evaluation = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), "--config-file", CONFIG,
         "--eval-only", "MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu",
         "DATASETS.TEST", f"('{SPLIT}',)", "OUTPUT_DIR", str(tmp_path / "eval"), *register],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    log = evaluation.stdout + evaluation.stderr
    out = tmp_path / "val.json"
    proc = _run(
        "demo.py", "--config-file", CONFIG, "--dataset", SPLIT, "--output-json", str(out),
        "--polygons", "--batch-size", "3", "--opts", "MODEL.WEIGHTS", weights, *register,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    json_file = os.path.join(os.path.dirname(image_dir), "annotations.json")
    with open(json_file) as f:
        gt = json.load(f)
    assert {r["image_id"] for r in results} <= {image["id"] for image in gt["images"]}
    assert {r["category_id"] for r in results} <= {c["id"] for c in gt["categories"]}
    assert all({"bbox", "score", "segmentation", "polygons"} <= set(r) for r in results)
    for task in ("segm", "bbox"):
        ap = _cocoeval_ap(json_file, str(out), task)
        assert ap > 20, f"{task} AP {ap}: the model did not learn"  # a real comparison
        assert ap == pytest.approx(_copypaste_ap(log, task), abs=1e-3)


def test_images_folders_and_a_bad_image(trained, tmp_path):
    weights, register, image_dir = trained
    inputs = tmp_path / "in"
    os.makedirs(inputs / "sub")
    names = sorted(os.listdir(image_dir))[:3]
    shutil.copy(os.path.join(image_dir, names[0]), inputs / names[0])
    shutil.copy(os.path.join(image_dir, names[1]), inputs / "sub" / names[1])
    (inputs / "sub" / "broken.png").write_bytes(b"\x89PNG not really")
    (inputs / "readme.txt").write_text("not an image")
    single = os.path.join(image_dir, names[2])
    out = tmp_path / "out"
    proc = _run(
        "demo.py", "--config-file", CONFIG, "--input", str(inputs), single,
        "--output", str(out), "--output-json", str(tmp_path / "r.json"),
        "--confidence-threshold", "0.5", "--opts", "MODEL.WEIGHTS", weights, *register,
    )  # fmt: skip
    assert proc.returncode == 1  # one input failed
    assert re.search(r"broken\.png: not an image file Pillow can read; skipped", proc.stderr)
    assert re.search(r"1 input\(s\) failed: .*broken\.png", proc.stderr)
    assert "img/s" in proc.stderr  # the progress bar
    assert sorted(os.listdir(out)) == sorted(os.path.splitext(n)[0] + ".png" for n in names)
    drawing = cv2.imread(str(out / (os.path.splitext(names[0])[0] + ".png")))
    original = cv2.imread(os.path.join(image_dir, names[0]))
    assert drawing.shape == original.shape and not np.array_equal(drawing, original)
    results = json.loads((tmp_path / "r.json").read_text())
    assert {r["file_name"] for r in results} == set(names)


def test_list_image_files_order_and_errors(tmp_path):
    for rel in ["b/2.jpg", "b/1.PNG", "a/3.jpeg", "a/x.txt", "c.bmp"]:
        os.makedirs(tmp_path / os.path.dirname(rel), exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    files = list_image_files([str(tmp_path), str(tmp_path / "c.bmp"), str(tmp_path / "b/*.jpg")])
    rel = [os.path.relpath(f, tmp_path) for f in files]
    assert rel == ["a/3.jpeg", "b/1.PNG", "b/2.jpg", "c.bmp", "c.bmp", "b/2.jpg"]
    with pytest.raises(DemoInputError, match="nowhere"):
        list_image_files([str(tmp_path / "nowhere")])


def _write_video(path, frames, fps=7.0):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


def _read_video(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


@pytest.mark.parametrize("flag", ["--video-input", "--webcam"])
def test_video_and_webcam_loop(trained, tmp_path, flag):
    weights, register, image_dir = trained
    names = sorted(os.listdir(image_dir))[:6]
    frames = [cv2.resize(cv2.imread(os.path.join(image_dir, n)), (176, 144)) for n in names]
    source = tmp_path / "in.mp4"
    _write_video(source, frames)
    out, results = tmp_path / "out.mp4", tmp_path / "frames.json"
    proc = _run(
        "demo.py", "--config-file", CONFIG, flag, str(source), "--output", str(out),
        "--output-json", str(results), "--opts", "MODEL.WEIGHTS", weights, *register,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    written, fps = _read_video(out)
    assert len(written) == 6 and fps == pytest.approx(7.0)
    assert written[0].shape == (144, 176, 3)
    assert re.search(
        r"6 frames: [\d.]+ frames/s model only, [\d.]+ frames/s end to end", proc.stdout
    )
    assert {r["image_id"] for r in json.loads(results.read_text())} <= set(range(6))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config-file", "missing.yaml", "--input", "x.jpg"], "config file 'missing.yaml'"),
        (["--config-file", CONFIG, "--input", "nowhere.jpg", "--output", "o"], "'nowhere.jpg'"),
        (["--config-file", CONFIG, "--input", CONFIG, "--output", "/no/such/dir/out"], "/no/such"),
        (["--config-file", CONFIG, "--video-input", "none.mp4", "--output", "o.mp4"], "none.mp4"),
        (
            ["--config-file", CONFIG, "--input", CONFIG, "--output", "o", "--opts"]
            + ["MODEL.WEIGHTS", "absent.pth"],
            "MODEL.WEIGHTS 'absent.pth' does not exist",
        ),
        (["--config-file", CONFIG, "--input", CONFIG], "no display"),
    ],
)
def test_demo_bad_arguments_are_one_line(args, message):
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "demo.py"), *args],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert "Traceback" not in proc.stderr


def test_demo_help_runs():
    proc = _run("demo.py", "--help")
    assert proc.returncode == 0 and "--output-json" in proc.stdout and "--webcam" in proc.stdout


@pytest.mark.parametrize("fast", [False, True])
def test_batched_prediction_equals_one_by_one(fast):
    import glob

    from yolact_d2.data.datasets import tiny_coco_root

    opts = ["MODEL.YOLACT.FAST_CPU_INFERENCE", fast, "MODEL.YOLACT.FAST_CPU_DTYPE", "float32"]
    torch.manual_seed(0)
    predictor = YolactPredictor(get_config("yolact_R_50_FPN_550.yaml", opts))
    files = sorted(glob.glob(os.path.join(tiny_coco_root(), "val2017", "*.jpg")))[:3]
    images = [cv2.imread(f) for f in files]
    calibrate_batch_norm(predictor.model, images[0][:, :, ::-1])
    singles = [predictor(image)["instances"] for image in images]
    batch = predictor(images)
    assert isinstance(batch, list) and len(batch) == 3
    for single, batched in zip(singles, batch):
        batched = batched["instances"]
        assert len(single) > 0 and single.image_size == batched.image_size
        for field in ("scores", "pred_classes", "pred_masks"):
            assert torch.equal(single.get(field), batched.get(field)), field
        assert torch.equal(single.pred_boxes.tensor, batched.pred_boxes.tensor)
    assert predictor([]) == []


def test_mask_to_polygons_outer_contours_and_holes():
    mask = np.zeros((40, 60), bool)
    mask[5:30, 5:30] = True
    mask[12:20, 12:20] = False  # a hole
    mask[10:15, 40:55] = True  # a second region
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2 and len(polygons[0]["holes"]) == 1 and polygons[1]["holes"] == []
    filled = np.zeros((40, 60), np.uint8)
    for polygon in polygons:
        cv2.fillPoly(filled, [np.array(polygon["exterior"]).reshape(-1, 2)], 1)
    expected = mask.copy()
    expected[12:20, 12:20] = True  # exteriors ignore holes
    assert np.array_equal(filled.astype(bool), expected)
    hole = np.array(polygons[0]["holes"][0]).reshape(-1, 2)
    assert hole[:, 0].min() >= 11 and hole[:, 0].max() <= 20  # around the hole
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []
    with pytest.raises(ValueError, match="shape"):
        mask_to_polygons(np.zeros((2, 5, 5), bool))


def test_prototype_view_arrays_and_tool(trained, tmp_path):
    weights, register, image_dir = trained
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    cfg = get_config("demo/yolact_R_18_synthetic.yaml")
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(weights)
    bgr = cv2.imread(os.path.join(image_dir, sorted(os.listdir(image_dir))[0]))
    view = prototype_view(model, bgr, top_k=3)
    k = cfg.MODEL.YOLACT.NUM_PROTOTYPES
    assert view["prototypes"].shape == (k, 40, 40) and (view["prototypes"] >= 0).all()
    assert view["coefficients"].shape == (3, k) and np.abs(view["coefficients"]).max() <= 1
    # the assembled masks are sigmoid(P c), and the model's output crops them
    logits = np.einsum("nk,khw->nhw", view["coefficients"], view["prototypes"])
    np.testing.assert_allclose(view["masks"], 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)
    assert ((view["cropped_masks"] == 0) | np.isclose(view["cropped_masks"], view["masks"])).all()
    assert view["scores"][0] > 0.5
    picture = render_prototype_view(view, bgr, ["a", "b", "c", "d"])
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.std() > 10
    out = tmp_path / "view.png"
    proc = _run(
        "visualize_prototypes.py", "--config-file", CONFIG, "--input",
        os.path.join(image_dir, sorted(os.listdir(image_dir))[0]), "--output", str(out),
        "--top-k", "2", "--opts", "MODEL.WEIGHTS", weights, *register,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert cv2.imread(str(out)) is not None and f"{k} prototypes, 2 detections" in proc.stdout
    proc = _run("visualize_prototypes.py", "--config-file", CONFIG, "--input", "no.png",
                "--output", str(out))  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: input 'no.png' does not exist"
