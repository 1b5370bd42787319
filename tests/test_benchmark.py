# Copyright (c) yolact_d2 contributors.
"""Tests of the benchmark package and of tools/benchmark.py and tools/benchmark_nms.py."""

import csv
import math
import numpy as np
import os

import cv2
import pytest
import torch

from detectron2.structures import Boxes, Instances

from yolact_d2.benchmark import (
    NMS_METHODS,
    MaskAgreement,
    benchmark_nms,
    build_predictor,
    clustered_candidates,
    config_label,
    default_image_dir,
    image_files,
    load_config_spec,
    load_images,
    markdown_table,
    match_detections,
    parse_config_spec,
    plot_speed_vs_ap,
    random_objects,
    synthetic_candidate_sets,
    synthetic_postprocess,
    timed_stages,
    yolact_priors,
)
from yolact_d2.utils.stages import POSTPROCESS_STAGES, STAGES, StageRecorder, stage

from common import REPO_ROOT, load_script

MASK_RCNN = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
# Small inputs keep the end-to-end runs short: YOLACT at 192 x 192, Mask R-CNN at short side 128
# (the resize also applies before YOLACT's own resize, which is harmless here).
TINY_OPTS = [
    "MODEL.YOLACT.INPUT_SIZE", "192",
    "INPUT.MIN_SIZE_TEST", "128",
    "INPUT.MAX_SIZE_TEST", "192",
]  # fmt: skip


def _load_tool(name):
    return load_script(f"tools/{name}.py")


@pytest.fixture(scope="module")
def two_images():
    return load_images(image_files(default_image_dir(), 2))


def test_benchmark_tool_end_to_end(tmp_path, two_images):
    tool = _load_tool("benchmark")
    weights = tmp_path / "random_yolact.pth"
    predictor = build_predictor("yolact_R_50_FPN_550.yaml", opts=TINY_OPTS)
    torch.save({"model": predictor.model.state_dict()}, weights)
    args = tool.get_parser().parse_args(
        ["--configs", "yolact_R_50_FPN_550.yaml", MASK_RCNN, "--num-images", "2",
         "--warmup", "1", "--precision", "fp32", "bf16", "fast", "--threads", "1",
         "--iou-images", "1", "--eval-weights", str(weights), "none", "--eval-images", "2",
         "--eval-dataset", "tiny_coco_val", "--output", str(tmp_path / "out"), "--", *TINY_OPTS]
    )  # fmt: skip
    rows = tool.main(args)
    # YOLACT in three precisions, Mask R-CNN in two ("fast" is YOLACT's path only).
    assert [(r["config"], r["precision"]) for r in rows] == [
        ("yolact_R_50_FPN_550", "fp32"),
        ("yolact_R_50_FPN_550", "bf16"),
        ("yolact_R_50_FPN_550", "fast"),
        ("mask_rcnn_R_50_FPN_1x", "fp32"),
        ("mask_rcnn_R_50_FPN_1x", "bf16"),
    ]
    out = tmp_path / "out"
    plot = cv2.imread(str(out / "speed_vs_ap.png"))
    assert plot is not None and plot.shape[0] > 200 and plot.shape[1] > 200
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 5
    for column in [
        "median_ms",
        "p90_ms",
        "images_per_s",
        "peak_rss_mb",
        "params_m",
        "gflops",
        "speedup_vs_fp32",
        "speedup_vs_baseline",
        "mask_iou_vs_fp32",
        "mask_ap",
        "box_ap",
        "stage_nms_ms",
        "postprocess_pct",
        "detections_per_image",
    ]:
        assert column in table[0], column
    yolact, mask_rcnn = table[0], table[3]
    # Parameters: the models' own counts; FLOPs: the same model has the same count in every
    # precision, and YOLACT at 192 x 192 has (192 / 550)^2 of its 550 x 550 network's FLOPs
    # plus the input-independent part, far below Mask R-CNN's on the same images.
    expected_params = {
        "yolact_R_50_FPN_550": sum(p.numel() for p in predictor.model.parameters()) / 1e6,
        "mask_rcnn_R_50_FPN_1x": sum(
            p.numel() for p in build_predictor(MASK_RCNN, opts=TINY_OPTS).model.parameters()
        ) / 1e6,
    }  # fmt: skip
    for row in table:
        assert float(row["params_m"]) == pytest.approx(expected_params[row["config"]], abs=1e-6)
        assert float(row["images_per_s"]) * float(row["mean_ms"]) == pytest.approx(1000, rel=1e-9)
    assert len({row["gflops"] for row in table[:3]}) == 1
    assert len({row["gflops"] for row in table[3:]}) == 1
    assert 0 < float(yolact["gflops"]) < float(mask_rcnn["gflops"])
    assert float(table[0]["speedup_vs_fp32"]) == 1.0 and float(table[3]["speedup_vs_fp32"]) == 1.0
    assert not math.isnan(float(yolact["mask_ap"]))  # evaluated with the saved weights
    assert mask_rcnn["mask_ap"] in ("", "nan")  # no weights: no AP
    assert 0 <= float(table[1]["mask_iou_vs_fp32"]) <= 1
    assert float(mask_rcnn["speedup_vs_baseline"]) == pytest.approx(1.0)
    markdown = (out / "results.md").read_text()
    assert "| config | runtime | precision |" in markdown and "| backbone+FPN |" in markdown


def test_stage_breakdown_times_the_predictors_own_inference(two_images):
    predictor = build_predictor("yolact_R_50_FPN_550.yaml", opts=TINY_OPTS)
    for image in two_images:
        expected = predictor(image)["instances"]
        (got,), seconds, total, (num_candidates,) = timed_stages(predictor, [image])
        got = got["instances"]
        assert set(seconds) == set(STAGES) and all(s > 0 for s in seconds.values())
        # The stages are disjoint parts of the one call they were measured in.
        assert sum(seconds.values()) <= total
        assert num_candidates > 0
        for field in ["scores", "pred_classes", "pred_masks"]:
            assert torch.equal(got.get(field), expected.get(field)), field
        assert torch.equal(got.pred_boxes.tensor, expected.pred_boxes.tensor)


def test_stage_marks_record_only_inside_a_recorder():
    with stage("nms"):  # no recorder: nothing to record into, nothing fails
        pass
    with StageRecorder() as recorder:
        with stage("nms"):
            pass
        with stage("nms"):
            pass
    with stage("paste"):  # after the recorder closed
        pass
    seconds = recorder.seconds()
    assert set(seconds) == set(STAGES)
    assert seconds["nms"] > 0 and all(seconds[s] == 0 for s in STAGES if s != "nms")


def test_synthetic_postprocess_runs_the_models_inference(two_images):
    predictor = build_predictor("yolact_R_50_FPN_550.yaml", opts=TINY_OPTS)
    objects = [
        (torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8]]), torch.tensor([0, 17]))
        for _ in two_images
    ]
    row = synthetic_postprocess(predictor, two_images, objects)
    assert all(row[f"synthetic_stage_{s}_ms"] > 0 for s in POSTPROCESS_STAGES)
    assert row["synthetic_postprocess_ms"] == pytest.approx(
        sum(row[f"synthetic_stage_{s}_ms"] for s in POSTPROCESS_STAGES), rel=0.5
    )
    # candidates clustered around the two objects, most suppressed by NMS
    assert row["synthetic_candidates_per_image"] > row["synthetic_detections_per_image"] >= 2


def test_nms_benchmark_on_a_small_candidate_set():
    cfg = load_config_spec("yolact_R_50_FPN_550.yaml", ["MODEL.YOLACT.INPUT_SIZE", "128"])
    priors = yolact_priors(cfg)
    assert priors.shape == (3 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1), 4)
    objects = random_objects(3, torch.Generator().manual_seed(0), num_classes=5)
    sets = synthetic_candidate_sets(priors, objects, num_classes=5)
    assert all(s.scores.shape == (5, len(priors)) and len(s.candidates) > 0 for s in sets)
    rows = benchmark_nms(sets, repeats=1, nms_settings={"top_k": 50, "input_size": 128})
    assert [r["method"] for r in rows] == list(NMS_METHODS)
    fast, traditional, cross_class, batched = rows
    assert fast["only_method_per_image"] == fast["only_fast_per_image"] == 0
    assert fast["time_vs_fast"] == 1 and all(r["median_ms"] > 0 for r in rows)
    # Greedy NMS keeps a superset of Fast NMS's boxes before the 100-detection cap.
    assert (
        batched["kept_per_image"] >= fast["kept_per_image"] - 1e-9
        or batched["kept_per_image"] == 100
    )
    assert "| Fast NMS |" in markdown_table(rows, [("method", "method", "s")])


def test_clustered_candidates_score_objects_above_background():
    cfg = load_config_spec("yolact_R_50_FPN_550.yaml")
    priors = yolact_priors(cfg)
    objects = torch.tensor([[0.2, 0.2, 0.6, 0.7]]), torch.tensor([17])
    boxes, logits = clustered_candidates(priors, *objects, torch.Generator().manual_seed(0))
    scores = torch.softmax(logits, dim=1)
    best = scores[:, 1:].max(dim=0).values.argmax()
    assert best == 17  # the object's class holds the highest score
    assert boxes.shape == (len(priors), 4)


def test_nms_tool_runs(tmp_path):
    tool = _load_tool("benchmark_nms")
    args = tool.get_parser().parse_args(
        ["--num-images", "2", "--repeats", "1", "--threads", "1", "--output", str(tmp_path)]
    )
    rows = tool.main(args)
    assert len(rows) == 4 and (tmp_path / "nms_results.csv").exists()
    assert "| method |" in (tmp_path / "nms_results.md").read_text()
    assert all(math.isnan(r.get("mask_ap", float("nan"))) for r in rows)  # no weights, no AP


def test_nms_tool_reports_ap_per_method_with_weights(tmp_path):
    tool = _load_tool("benchmark_nms")
    weights = tmp_path / "random_yolact.pth"
    predictor = build_predictor("yolact_R_50_FPN_550.yaml", opts=["MODEL.YOLACT.INPUT_SIZE", "160"])
    torch.save({"model": predictor.model.state_dict()}, weights)
    args = tool.get_parser().parse_args(
        ["--source", "model", "--num-images", "1", "--repeats", "1", "--threads", "1",
         "--weights", str(weights), "--eval-images", "2", "--output", str(tmp_path / "out"),
         "MODEL.YOLACT.INPUT_SIZE", "160"]
    )  # fmt: skip
    rows = tool.main(args)
    # Each method's AP is what train_net.py --eval-only gives with that NMS type, the same
    # weights and the same 2 images (an independent path: the trainer's loader and evaluator).
    from yolact_d2.benchmark import dataset_subset
    from yolact_d2.checkpoint.checkpointer import YolactCheckpointer
    from yolact_d2.engine import YolactTrainer

    subset = dataset_subset("tiny_coco_val", 2)
    assert {r["method"] for r in rows} >= {"Fast NMS", "traditional NMS"}
    for row in rows:
        nms_type = row["nms_type"]
        cfg = load_config_spec(
            "yolact_R_50_FPN_550.yaml",
            ["MODEL.YOLACT.INPUT_SIZE", "160", "MODEL.YOLACT.TEST.NMS_TYPE", nms_type,
             "DATASETS.TEST", (subset,), "OUTPUT_DIR", str(tmp_path / f"eval_{nms_type}")],
        )  # fmt: skip
        model = YolactTrainer.build_model(cfg)
        YolactCheckpointer(model).load(str(weights))
        expected = YolactTrainer.test(cfg, model)
        assert row["mask_ap"] == pytest.approx(expected["segm"]["AP"], abs=1e-9), nms_type
        assert row["box_ap"] == pytest.approx(expected["bbox"]["AP"], abs=1e-9), nms_type


def _instances(boxes, classes, scores, masks):
    result = Instances((8, 8))
    result.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    result.pred_classes = torch.tensor(classes)
    result.scores = torch.tensor(scores)
    result.pred_masks = masks
    return result


def test_mask_agreement_matches_by_class_and_box():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True
    masks[1, 4:, 4:] = True
    reference = _instances([[0, 0, 4, 4], [4, 4, 8, 8]], [1, 2], [0.9, 0.8], masks)
    shifted = masks.clone()
    shifted[0, :4, :2] = False  # half of the first mask
    other = _instances(
        [[4, 4, 8, 8], [0, 0, 4, 4], [0, 0, 4, 4]],
        [2, 1, 3],
        [0.8, 0.9, 0.5],
        torch.cat([shifted[1:], shifted[:1], shifted[:1]]),
    )
    assert match_detections(reference, other) == [(0, 1), (1, 0)]
    agreement = MaskAgreement()
    agreement.add(reference, other)
    assert agreement.mean_iou == pytest.approx((0.5 + 1.0) / 2)
    assert agreement.matched_fraction == 1.0


def test_plot_with_and_without_ap(tmp_path):
    rows = [
        {"config": "a", "precision": "fp32", "threads": 1, "images_per_s": 2.0, "median_ms": 500.0,
         "mask_ap": 29.8},
        {"config": "b", "precision": "fp32", "threads": 1, "images_per_s": 1.0, "median_ms": 1000.0,
         "mask_ap": float("nan")},
    ]  # fmt: skip
    plot_speed_vs_ap(rows, str(tmp_path / "ap.png"))
    plot_speed_vs_ap(rows[1:], str(tmp_path / "speed.png"))
    for name in ("ap.png", "speed.png"):
        plot = cv2.imread(str(tmp_path / name))
        assert plot is not None and plot.shape[0] > 200 and plot.shape[1] > 200, name
    # the two plots differ: one has an AP axis, the other is speed only
    assert not np.array_equal(
        cv2.imread(str(tmp_path / "ap.png")), cv2.imread(str(tmp_path / "speed.png"))
    )


def test_config_specs_with_their_own_overrides():
    spec = MASK_RCNN + "::MODEL.ROI_HEADS.SCORE_THRESH_TEST=0.0,MODEL.PIXEL_STD=(1.0, 2.0, 3.0)"
    assert parse_config_spec(spec) == (
        MASK_RCNN,
        ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.PIXEL_STD", "(1.0, 2.0, 3.0)"],
        ["SCORE_THRESH_TEST=0.0", "PIXEL_STD=(1.0, 2.0, 3.0)"],
    )
    assert (
        config_label(spec)
        == "mask_rcnn_R_50_FPN_1x[SCORE_THRESH_TEST=0.0,PIXEL_STD=(1.0, 2.0, 3.0)]"
    )
    cfg = load_config_spec(spec, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.2"])  # global opts last
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == 0.2 and list(cfg.MODEL.PIXEL_STD) == [
        1.0,
        2.0,
        3.0,
    ]
    assert config_label("configs/yolact_R_50_FPN_550.yaml") == "yolact_R_50_FPN_550"
    with pytest.raises(ValueError):
        parse_config_spec(MASK_RCNN + "::MODEL.ROI_HEADS")


def test_full_workload_preset_gives_mask_rcnn_a_trained_models_detection_count(two_images):
    spec = MASK_RCNN + "::full_workload"
    assert config_label(spec) == "mask_rcnn_R_50_FPN_1x[full_workload]"
    small = ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "192"]
    plain = build_predictor(MASK_RCNN, opts=small)(two_images[0])["instances"]
    full = build_predictor(spec, opts=small)(two_images[0])["instances"]
    assert len(plain) < 100 and len(full) == 100


def test_benchmark_tool_runtime_rows(tmp_path, two_images):
    """The exported model on onnxruntime and OpenVINO as rows beside PyTorch's, with AP."""
    tool = _load_tool("benchmark")
    opts = ["MODEL.YOLACT.INPUT_SIZE", "192"]
    weights = tmp_path / "random_yolact.pth"
    predictor = build_predictor("yolact_R_50_FPN_550.yaml", opts=opts)
    torch.save({"model": predictor.model.state_dict()}, weights)
    args = tool.get_parser().parse_args(
        ["--configs", "yolact_R_50_FPN_550.yaml", "--num-images", "2", "--warmup", "1",
         "--precision", "fp32", "bf16", "--runtime", "pytorch", "onnxruntime", "openvino",
         "--threads", "1", "--iou-images", "2", "--no-stages", "--no-flops",
         "--eval-weights", str(weights), "--eval-images", "2", "--eval-dataset", "tiny_coco_val",
         "--output", str(tmp_path / "out"), "--", *opts]
    )  # fmt: skip
    rows = tool.main(args)
    assert [(r["runtime"], r["precision"]) for r in rows] == [
        ("pytorch", "fp32"),
        ("pytorch", "bf16"),
        ("onnxruntime", "fp32"),
        ("openvino", "fp32"),
        ("openvino", "bf16"),
    ]
    fp32 = rows[0]
    for row in rows[2:]:
        assert row["speedup_vs_fp32"] == pytest.approx(fp32["median_ms"] / row["median_ms"])
        assert 0 < row["matched_vs_fp32"] <= 1 and 0 <= row["mask_iou_vs_fp32"] <= 1
        assert row["detections_per_image"] == pytest.approx(fp32["detections_per_image"], abs=3)
        assert not math.isnan(row["mask_ap"])
    # The exported fp32 model finds what PyTorch finds (random weights: the same images).
    assert rows[2]["matched_vs_fp32"] > 0.95 and rows[2]["mask_iou_vs_fp32"] > 0.95
    assert os.path.isfile(tmp_path / "out" / "export" / "yolact_R_50_FPN_550" / "model.onnx")
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| config | runtime | precision |" in markdown and "| onnxruntime |" in markdown


def test_benchmark_tool_fast_fp32_calibrated_and_memory(tmp_path, two_images):
    """--calibrate gives the random weights a trained model's workload, fp32-fast rows are the
    compiled fast path in float32 (the same detections as fp32), and --memory-sizes reports one
    call's peak memory per image size."""
    tool = _load_tool("benchmark")
    args = tool.get_parser().parse_args(
        ["--configs", "demo/yolact_R_18_synthetic.yaml", "--num-images", "2", "--warmup", "1",
         "--precision", "fp32", "fp32-fast", "--threads", "1", "--iou-images", "2",
         "--no-stages", "--no-flops", "--calibrate", "2", "--memory-sizes", "64x48", "320x180",
         "--output", str(tmp_path / "out")]
    )  # fmt: skip
    rows = tool.main(args)
    speed, memory = rows[:2], rows[2:]
    assert [r["precision"] for r in speed] == ["fp32", "fp32-fast"]
    assert all(r["weights"] == "random (seeded), calibrated" for r in speed)
    assert os.path.isfile(tmp_path / "out" / "calibrated" / "yolact_R_18_synthetic.pth")
    assert speed[1]["same_vs_fp32"] == 1.0 and speed[1]["first_call_s"] > 0
    assert [r["image_size"] for r in memory] == ["64x48", "320x180"]
    assert all(r["detections"] > 0 and r["peak_rss_mb"] > 100 for r in memory)
    assert memory[0]["rss_vs_first"] == 1.0 and memory[1]["masks_mb"] > memory[0]["masks_mb"]
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| config | precision | image | detections |" in markdown
    assert "avx" in markdown or "flags unknown" in markdown  # the CPU's flags are reported


def test_memory_size_argument_is_checked():
    tool = _load_tool("benchmark")
    with pytest.raises(SystemExit, match="WIDTHxHEIGHT"):
        tool._parse_size("1920by1080")


def test_synthetic_postprocess_only_for_models_with_the_objects_classes():
    from yolact_d2.benchmark.runner import _objects_fit

    objects = [(torch.zeros(1, 4), torch.tensor([61])), (torch.zeros(0, 4), torch.zeros(0))]
    assert _objects_fit(objects, 80)
    assert not _objects_fit(objects, 4)  # a 4-class model has no class 61
    assert not _objects_fit(None, 80)


def test_benchmark_tool_int8_rows(tmp_path):
    """--precision int8 quantises the export on the calibration images and times it on
    OpenVINO, with AP (in a subprocess: NNCF is not run inside the pytest process)."""
    import subprocess
    import sys

    weights = tmp_path / "random_yolact.pth"
    opts = ["MODEL.YOLACT.INPUT_SIZE", "192"]
    predictor = build_predictor("yolact_R_50_FPN_550.yaml", opts=opts)
    torch.save({"model": predictor.model.state_dict()}, weights)
    out = tmp_path / "out"
    args = [
        sys.executable, os.path.join(REPO_ROOT, "tools", "benchmark.py"),
        "--configs", "yolact_R_50_FPN_550.yaml", "--num-images", "2", "--warmup", "1",
        "--precision", "fp32", "int8", "--runtime", "openvino", "--threads", "1",
        "--iou-images", "2", "--no-stages", "--no-flops", "--eval-weights", str(weights),
        "--eval-images", "2", "--eval-dataset", "tiny_coco_val",
        "--calibration-dataset", "tiny_coco_train", "--int8-calibration-images", "4",
        "--output", str(out), "--", *opts,
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["runtime"], r["precision"]) for r in rows] == [
        ("openvino", "fp32"),
        ("openvino", "int8"),
    ]
    assert all(not math.isnan(float(r["mask_ap"])) for r in rows)
    assert 0 < float(rows[1]["matched_vs_fp32"]) <= 1
    assert os.path.isfile(out / "export" / "yolact_R_50_FPN_550" / "model_int8.xml")
    assert "int8 calibration: 4 images of tiny_coco_train" in done.stdout + done.stderr
