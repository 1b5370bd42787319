# Copyright (c) yolact_d2 contributors.
"""The main job (tools/train_synthetic_demo.py, docs/GETTING_STARTED.md), a few iterations."""

import contextlib
import io

import cv2
import pytest

from yolact_d2.data.synthetic import SyntheticSpec, register_synthetic_split

from common import load_script

TRAIN, VAL = "test_demo_synthetic_train", "test_demo_synthetic_val"


def load_demo_script():
    return load_script("tools/train_synthetic_demo.py")


def cocoeval_ap(dataset_name, results_file, task):
    """AP (0-100) of a COCO results file, with pycocotools alone."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from detectron2.data import MetadataCatalog

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(MetadataCatalog.get(dataset_name).json_file)
        evaluation = COCOeval(gt, gt.loadRes(str(results_file)), task)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return 100 * evaluation.stats[0]


@pytest.fixture(scope="module")
def small_splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_data")
    register_synthetic_split(TRAIN, str(root / "train"), SyntheticSpec(num_images=8, seed=0))
    register_synthetic_split(VAL, str(root / "val"), SyntheticSpec(num_images=5, seed=1))
    return root


def test_demo_trains_evaluates_and_draws(small_splits, tmp_path):
    out = tmp_path / "demo"
    opts = [
        "DATASETS.TRAIN", f"('{TRAIN}',)",
        "DATASETS.TEST", f"('{VAL}',)",
        "SOLVER.MAX_ITER", "3",
        "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.IMS_PER_BATCH", "2",
        # every prior is a candidate, so that the barely trained model has masks to evaluate
        "MODEL.YOLACT.TEST.SCORE_THRESH", "0.0",
        "MODEL.YOLACT.TEST.DETECTIONS_PER_IMAGE", "5",
        "MODEL.DEVICE", "cpu",
        "OUTPUT_DIR", str(out),
    ]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        load_demo_script().main(opts)
    text = printed.getvalue()

    # the AP line and timings are printed
    ap_line = next(line for line in text.splitlines() if line.startswith("mask AP"))
    mask_ap, box_ap = float(ap_line.split()[2]), float(ap_line.split()[5])
    # ... and is what pycocotools computes from the predictions the evaluator wrote.
    results_file = out / "inference" / "coco_instances_results.json"
    for task, printed_ap in (("segm", mask_ap), ("bbox", box_ap)):
        assert printed_ap == pytest.approx(cocoeval_ap(VAL, results_file, task), abs=0.051)
    assert "training" in text and "drawings:" in text
    # the model was trained for 3 iterations with the demo's optimizer and clipping
    assert (out / "model_final.pth").is_file()
    metrics = (out / "metrics.json").read_text()
    assert '"grad_norm"' in metrics and '"iteration": 2' in metrics
    # COCOEvaluator wrote its predictions; one drawing per validation image, plus the grid
    assert (out / "inference" / "coco_instances_results.json").is_file()
    drawings = sorted(p.name for p in (out / "visualizations").iterdir())
    assert drawings == ["000000.png", "000001.png", "000002.png", "000003.png", "000004.png",
                        "grid.png"]  # fmt: skip
    grid = cv2.imread(str(out / "visualizations" / "grid.png"))
    assert grid.shape[:2] == (2 * 160, 4 * 160)
