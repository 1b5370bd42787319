# Copyright (c) yolact_d2 contributors.
"""tools/profile_training.py and tools/loss_curve.py, run as a user runs them."""

import json
import os
import re
import subprocess
import sys

from yolact_d2.utils.cpu import cpu_flags, cpu_flags_summary

from common import REPO_ROOT

TOOLS = os.path.join(REPO_ROOT, "tools")


def run_tool(name, *args, timeout=300):
    result = subprocess.run(
        [sys.executable, os.path.join(TOOLS, name), *map(str, args)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout


def test_loss_curve_summary(tmp_path):
    metrics = tmp_path / "metrics.json"
    losses = [10.0, 8.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    with open(metrics, "w") as f:
        for i, loss in enumerate(losses):
            entry = {"iteration": i, "total_loss": loss, "loss_cls": loss / 2, "time": 1.5 + i}
            if i == 5:
                entry["skipped_steps"] = 1
            f.write(json.dumps(entry) + "\n")
        f.write(json.dumps({"iteration": 7, "bbox/AP": 1.0}) + "\n")  # evaluation lines
    png = tmp_path / "curve.png"
    code, out = run_tool("loss_curve.py", metrics, "--output", png)
    assert code == 0, out
    assert "8 logged iterations (0..7)" in out
    # first three 8.0, last three 2.0: 75% lower
    assert "total loss 8.000 -> 2.000 (75.0% lower" in out
    assert "non-finite (skipped) steps: 1" in out
    assert "median 5.00 s/iteration" in out  # median of 1.5 .. 8.5
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_curve_missing_file(tmp_path):
    code, out = run_tool("loss_curve.py", tmp_path / "nope.json")
    assert code != 0 and "nope.json does not exist" in out


def test_profile_training_reports_every_phase(tmp_path):
    code, out = run_tool(
        "profile_training.py",
        "--config-file", "configs/yolact_R_50_FPN_550.yaml",
        "--iters", 2, "--warmup", 1, "--top-ops", 3,
        "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        "MODEL.YOLACT.INPUT_SIZE", 96, "MODEL.YOLACT.FREEZE_BN_BELOW_BATCH", 0,
        "DATASETS.TRAIN", "('tiny_coco_train',)", "DATASETS.TEST", "()",
        "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2, "OUTPUT_DIR", tmp_path,
    )  # fmt: skip
    assert code == 0, out[-3000:]
    assert "2 timed iterations after 1 warm-up" in out
    rows = dict(re.findall(r"^\| ([a-z +]+) \| ([0-9.]+) \|", out, re.M))
    phases = ["data", "network forward", "loss", "backward + clip", "optimizer step"]
    assert set(rows) == set(phases) | {"iteration"}
    # The phases are the parts of one iteration (medians: they need not add up exactly): each
    # is shorter than the iteration, and together they account for most of it.
    iteration = float(rows["iteration"])
    assert all(0 < float(rows[p]) < iteration for p in phases)
    assert 0.5 * iteration <= sum(float(rows[p]) for p in phases) <= 1.5 * iteration
    assert "aten::" in out  # the operator table
    assert cpu_flags_summary() in out


def test_cpu_flags_from_a_cpuinfo_file(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags : fpu avx2 amx_tile avx512f sse avx512_bf16\n")
    assert cpu_flags(str(cpuinfo)) == ["avx2", "avx512f", "avx512_bf16", "amx_tile"]
    assert cpu_flags(str(tmp_path / "missing")) == []
