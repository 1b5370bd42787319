# Copyright (c) yolact_d2 contributors.
"""
The docs stay true: every fenced ``bash`` block of the README and the docs is either run here
as written (in a scratch copy of the checkout's layout, with the activated environment's
``python`` first on PATH, as the Installation section says) or listed below with the reason it
cannot run on a CI machine (a released checkpoint to download, GPUs, a benchmark of minutes).
A new block that is neither fails :func:`test_every_block_is_run_or_has_a_reason`.

The one substitution: the blocks that use the main job's model find it where
``bash dev/demo.sh`` writes it, but trained for a few iterations (tests/test_demo.py checks the
full main job's pieces).
"""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

from common import REPO_ROOT

DOCS = ["README.md", os.path.join("datasets", "README.md")] + sorted(
    os.path.relpath(p, REPO_ROOT) for p in glob.glob(os.path.join(REPO_ROOT, "docs", "*.md"))
)

# Checked first, in order: a block matching one of these is not run, for the reason given.
NOT_RUN = [
    (r"dev/setup_env\.sh|pip install|-m venv", "installs packages (CI runs the set-up itself)"),
    (
        r"bash dev/(demo|test)\.sh",
        "the two commands: CI runs the tests; tests/test_demo.py the job",
    ),
    (
        r"_d2\.pth|_54_800000\.pth|export/model\.onnx",
        "needs a released checkpoint (or its export), which cannot be downloaded here",
    ),
    (r"--num-gpus 8|--device cuda|gpu_check", "needs GPUs"),
    (r"--ray-address|ray start", "needs a Ray cluster (tests/test_predict_dataset.py: local)"),
    (
        r"tools/benchmark(_nms)?\.py|tools/profile_(training|runtime)\.py"
        r"|dev/benchmark_predict_dataset",
        "a benchmark of many minutes",
    ),
    (
        r"coco_2017_val|overfit_tiny_coco|tiny_coco_instant_test|/tmp/d2data|FVCORE_CACHE",
        "trains on tiny_coco for minutes, or sets up paths for that (tests/test_training_tools.py "
        "and tests/test_train_net.py run shortened versions)",
    ),
    (r"python -m pytest|black --check|isort --check|^flake8", "the suite and style checks (CI)"),
    (
        r"output/aspect_demo",
        "trains for minutes (tests/test_aspect_ratio.py trains and evaluates the same way, "
        "shorter)",
    ),
    (
        r"DATASETS\.REGISTER_YOLO",
        "tests/test_yolo_datasets.py runs this walk-through as written, on a harder dataset (an "
        "image without labels, a two-part object)",
    ),
    (
        r"tools/evaluate_tracking\.py",
        "a measurement over 600 frames (tests/test_tracking.py runs it on two short videos)",
    ),
]
# Everything else must be one of these, and is run.
RUN = r"tools/example_data\.py|output/demo_synthetic/model_final\.pth|my_shapes|export/demo"


def documented_blocks():
    """(doc, line, text) of every fenced bash block of :data:`DOCS`, in order."""
    blocks = []
    for doc in DOCS:
        with open(os.path.join(REPO_ROOT, doc)) as f:
            text = f.read()
        for match in re.finditer(r"```bash\n(.*?)```", text, re.S):
            blocks.append((doc, text[: match.start()].count("\n") + 1, match.group(1)))
    return blocks


def classify(text):
    """("skip", reason), ("run", None) or (None, None) for a block no rule covers (its shell
    comments left out)."""
    text = re.sub(r"(^|\s)#.*$", "", text, flags=re.M)
    for pattern, reason in NOT_RUN:
        if re.search(pattern, text, re.M):
            return "skip", reason
    if re.search(RUN, text):
        return "run", None
    return None, None


BLOCKS = documented_blocks()
RUN_BLOCKS = [b for b in BLOCKS if classify(b[2])[0] == "run"]


def test_every_block_is_run_or_has_a_reason():
    assert len(BLOCKS) > 30 and len(RUN_BLOCKS) >= 10
    unclassified = [f"{doc}:{line}" for doc, line, text in BLOCKS if classify(text)[0] is None]
    assert not unclassified, f"blocks neither run nor given a reason in NOT_RUN: {unclassified}"


def test_no_placeholder_inputs():
    """Inputs a reader does not have (the first-hour report's list)."""
    placeholders = r"\ba\.jpg|\bphotos/|street\.mp4|\bimage\.jpg|my_image|more/\*|\bIMG\b"
    for doc, line, text in BLOCKS:
        assert not re.search(placeholders, text), f"{doc}:{line}: {text}"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """
    A directory laid out like the checkout (its tracked top-level entries linked, datasets/
    with tiny_coco linked), after ``python tools/example_data.py`` and a short main job.
    """
    root = tmp_path_factory.mktemp("docs")
    for name in LINKED:
        os.symlink(os.path.join(REPO_ROOT, name), root / name)
    os.makedirs(root / "datasets")
    tiny_coco = os.environ["YOLACT_D2_TINY_COCO"]
    os.symlink(os.path.realpath(tiny_coco), root / "datasets" / "tiny_coco")
    env = {k: v for k, v in os.environ.items() if k not in ("DETECTRON2_DATASETS", "DISPLAY")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # other jobs may share the two cores
    short_main_job = (
        "python tools/example_data.py\n"
        "python tools/train_synthetic_demo.py SOLVER.MAX_ITER 30 SOLVER.CHECKPOINT_PERIOD 1000\n"
    )
    log = _bash(short_main_job, root, env)
    assert os.path.isfile(root / "output" / "demo_synthetic" / "model_final.pth"), log[-3000:]
    return root, env


def _bash(script, cwd, env):
    proc = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"{script}\n---\n{proc.stdout[-6000:]}"
    return proc.stdout


def _check_walkthrough(root, log):
    assert os.path.isfile(root / "output" / "my_shapes" / "model_final.pth")
    eval_log = log[log.rindex("Command Line Args") :]
    assert "eval_only=True" in eval_log.splitlines()[0]
    for task in ("bbox", "segm"):
        assert f"Evaluation results for {task}:" in eval_log
    assert "circle" in eval_log and "square" in eval_log  # the per-class table: the json's classes


def _check_coco_eval(root, log):
    assert log.count("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all") == 2  # segm, bbox


def _check_onnx_ids(root, log):
    with open(root / "datasets" / "yolact_synthetic" / "val" / "annotations.json") as f:
        ids = {im["id"]: im["file_name"] for im in json.load(f)["images"]}
    with open(root / "results" / "demo" / "detections.json") as f:
        results = json.load(f)
    assert results and all(os.path.basename(ids[r["image_id"]]) == r["file_name"] for r in results)


def _check_prototypes(root, log):
    assert os.path.getsize(root / "output" / "prototype_view.png") > 0


def _check_eval(root, log):
    assert "Evaluation results for segm:" in log


def _check_int8(root, log):
    assert os.path.isfile(root / "output" / "export_demo" / "model_int8.xml")


# What some blocks must leave behind, beyond a zero exit code (a pattern of the block's text).
CHECKS = [
    (r"OUTPUT_DIR \"\$OUT\"", _check_walkthrough),
    (r"COCOeval", _check_coco_eval),
    (r"--image-ids-from", _check_onnx_ids),
    (r"visualize_prototypes", _check_prototypes),
    (r"--eval-only", _check_eval),
    (r"tools/quantize\.py", _check_int8),
]
LINKED = ("configs", "tools", "train_net.py", "yolact_d2")


def test_documented_commands_run_as_written(sandbox):
    root, env = sandbox
    for doc, line, text in RUN_BLOCKS:  # in the docs' order: later blocks use earlier outputs
        log = _bash(text, root, env)
        for pattern, check in CHECKS:
            if re.search(pattern, text):
                check(root, log)
    # what they wrote is ignored by git (.gitignore): tools never write into tracked files
    created = {p for p in os.listdir(root) if p not in LINKED and p != "datasets"}
    created |= {f"datasets/{p}" for p in os.listdir(root / "datasets") if p != "tiny_coco"}
    assert {"output", "examples", "export", "results", "datasets/my_shapes"} <= created
    probes = sorted(f"{p}/a_file" for p in created)
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *probes],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert sorted(ignored.stdout.split()) == probes
