# Copyright (c) yolact_d2 contributors.
"""tools/profile_runtime.py's accounting: every runtime node attributed to a stage."""

import numpy as np
import os

import pytest
import torch

from yolact_d2.benchmark.runtime_profile import (
    onnx_node_stages,
    openvino_images_per_second,
    profile_onnxruntime,
    profile_openvino,
    summarize,
)

from common import CONFIG_DIR, get_config, load_script

STAGES = {"preprocess", "backbone", "fpn", "head", "protonet", "postprocess"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from yolact_d2.deploy import build_export_model, export_model

    cfg = get_config("demo/yolact_R_18_synthetic.yaml")
    torch.manual_seed(0)
    model = build_export_model(cfg)
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    path = export_model(cfg, model, "onnx", str(tmp_path_factory.mktemp("profile")), image)
    return path, image


def test_every_onnx_node_has_a_stage(exported):
    stages = onnx_node_stages(exported[0])
    assert set(stages.values()) == STAGES
    # the first nodes turn the uint8 image into the network input; the last ones post-process
    names = [n for n in stages if n.startswith("node_")]
    assert stages[names[0]] == "preprocess" and stages[names[-1]] == "postprocess"


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_runtime_time_is_attributed(exported, runtime):
    path, image = exported
    if runtime == "openvino":
        nodes = profile_openvino(path, path, [image], 2, "f32")
    else:
        nodes = profile_onnxruntime(path, [image], 2)
    total = sum(n.ms for n in nodes)
    by_stage = {s: sum(n.ms for n in nodes if n.stage == s) for s in STAGES | {"other"}}
    assert total > 0 and all(by_stage[s] > 0 for s in ("backbone", "head", "protonet"))
    assert by_stage["other"] < 0.05 * total  # (almost) nothing left unattributed
    table = summarize(nodes)
    assert "| backbone |" in table and "| **total** |" in table


def test_openvino_images_per_second_with_one_and_two_requests(exported, monkeypatch):
    import openvino

    path, image = exported
    started = []
    original = openvino.AsyncInferQueue.start_async
    monkeypatch.setattr(
        openvino.AsyncInferQueue,
        "start_async",
        lambda self, *a, **k: (started.append(len(self)), original(self, *a, **k))[1],
    )
    for requests in (1, 2):
        started.clear()
        rate = openvino_images_per_second(path, [image, image[::-1].copy()], 2, requests)
        assert rate > 0
        # warm-up (one image per request), then 3 repeats of the 2 images, on a queue that size
        assert started == [requests] * (requests + 6)


def test_tool_profiles_the_network_graph(tmp_path):
    """tools/profile_runtime.py --graph network: the network alone, its time all in the network."""
    tool = load_script("tools/profile_runtime.py")
    config = os.path.join(CONFIG_DIR, "demo", "yolact_R_18_synthetic.yaml")
    tool.main(
        ["--config-file", config, "--graph", "network", "--runs", "openvino-f32", "onnxruntime-f32"]
        + ["--num-images", "1", "--output", str(tmp_path), "MODEL.WEIGHTS", ""]
    )
    from yolact_d2.deploy import read_metadata

    assert read_metadata(str(tmp_path / "model.onnx"))["graph"] == "network"
    report = (tmp_path / "profile.md").read_text()
    assert "(network graph)" in report
    for run in ("openvino-f32", "onnxruntime-f32"):
        stage_table = report.split(f"## {run}")[1].strip().split("\n\n")[0]
        rows = {
            line.split("|")[1].strip(): float(line.split("|")[2])
            for line in stage_table.splitlines()
            if line.startswith("| ") and line.split("|")[2].strip().replace(".", "").isdigit()
        }
        assert rows["backbone"] > 0 and rows["protonet"] > 0
        # no Fast NMS, no mask assembly in this graph: (almost) nothing after the network
        assert rows.get("postprocess", 0.0) < 0.05 * sum(rows.values())
