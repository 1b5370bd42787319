# Copyright (c) yolact_d2 contributors.
"""
Where an exported YOLACT spends its time in a runtime: the per-node times of OpenVINO
(``PERF_COUNT``) and onnxruntime (its profiler), each node attributed to a stage of the model
through the module hierarchy ``torch.onnx`` records in every ONNX node's metadata.
"""

import collections
import json
import numpy as np
import os
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Sequence

from yolact_d2.deploy.stages import STAGES, onnx_node_stages

__all__ = [
    "NodeTime",
    "onnx_node_stages",
    "profile_openvino",
    "profile_onnxruntime",
    "summarize",
    "openvino_images_per_second",
]


@dataclass
class NodeTime:
    """One executed node: its name, type, the kernel that ran it, its stage and ms per image."""

    name: str
    node_type: str
    kernel: str
    stage: str
    ms: float


def _stage_of(name: str, stages: Dict[str, str], ordered: Sequence[str]) -> str:
    """The stage of a runtime node: that of the longest ONNX node name its name starts with."""
    if name in stages:
        return stages[name]
    base = name.split("/")[0]
    if base in stages:
        return stages[base]
    matches = [n for n in ordered if name.startswith(n)]
    return stages[max(matches, key=len)] if matches else "other"


def _compile_openvino(model_path: str, config: Dict[str, str]):
    """An OpenVINO model (.onnx or .xml) compiled for the CPU with ``config``."""
    import openvino

    from yolact_d2.utils.signal_stack import preserved_signal_stack

    core = openvino.Core()
    # (OpenVINO's CPU plugin would leave this thread a dangling alternate signal stack.)
    with preserved_signal_stack():
        return core.compile_model(core.read_model(model_path), "CPU", config)


def profile_openvino(
    model_path: str, onnx_path: str, images: List[np.ndarray], threads: int, precision: str
) -> List[NodeTime]:
    """
    Per-node times (mean ms per image over ``images``, after one untimed run) of an OpenVINO
    model (.onnx or an int8 .xml), with ``INFERENCE_PRECISION_HINT`` ``precision`` ("f32" or
    "bf16"; int8 IRs run their quantised layers in int8 whatever it says).
    """
    config = {
        "PERF_COUNT": "YES",
        "INFERENCE_NUM_THREADS": str(threads),
        "INFERENCE_PRECISION_HINT": precision,
    }
    compiled = _compile_openvino(model_path, config)
    request = compiled.create_infer_request()
    request.infer({0: images[0]})
    totals: Dict[tuple, float] = collections.defaultdict(float)
    for image in images:
        request.infer({0: image})
        for info in request.get_profiling_info():
            if info.status.name == "NOT_RUN":
                continue
            key = (info.node_name, info.node_type, info.exec_type)
            totals[key] += info.real_time.total_seconds() * 1000
    stages = onnx_node_stages(onnx_path)
    ordered = sorted(stages)
    return [
        NodeTime(name, node_type, kernel, _stage_of(name, stages, ordered), ms / len(images))
        for (name, node_type, kernel), ms in totals.items()
    ]


def openvino_images_per_second(
    model_path: str,
    images: List[np.ndarray],
    threads: int,
    requests: int,
    precision: str = "f32",
    repeats: int = 3,
) -> float:
    """
    Images per second of an OpenVINO model's graph (its outputs, without the paste step) on
    ``images`` repeated ``repeats`` times: with ``requests`` 1 one inference after another under
    the LATENCY hint, otherwise that many requests in flight (``AsyncInferQueue``) under the
    THROUGHPUT hint, which splits the ``threads`` cores between them. ``precision`` is the
    ``INFERENCE_PRECISION_HINT`` (OpenVINO's default is bf16 on CPUs with bf16 instructions).
    """
    import time

    import openvino

    config = {
        "PERFORMANCE_HINT": "LATENCY" if requests == 1 else "THROUGHPUT",
        "INFERENCE_NUM_THREADS": str(threads),
        "PERFORMANCE_HINT_NUM_REQUESTS": str(requests),
        "INFERENCE_PRECISION_HINT": precision,
    }
    compiled = _compile_openvino(model_path, config)
    queue = openvino.AsyncInferQueue(compiled, requests)
    for image in images[:requests]:  # warm-up: every request once
        queue.start_async({0: image})
    queue.wait_all()
    start = time.perf_counter()
    for _ in range(repeats):
        for image in images:
            queue.start_async({0: image})
    queue.wait_all()
    return repeats * len(images) / (time.perf_counter() - start)


def profile_onnxruntime(onnx_path: str, images: List[np.ndarray], threads: int) -> List[NodeTime]:
    """Per-node times (mean ms per image) of onnxruntime's profiler on the CPU provider."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = onnxruntime.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    session.run(None, {"image": images[0]})
    for image in images:
        session.run(None, {"image": image})
    with open(session.end_profiling()) as f:
        events = json.load(f)
    stages = onnx_node_stages(onnx_path)
    ordered = sorted(stages)
    totals: Dict[tuple, float] = collections.defaultdict(float)
    runs = 0
    for event in events:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            runs += 1
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        name = event["name"][: -len("_kernel_time")]
        args = event.get("args", {})
        key = (name, args.get("op_name", "?"), args.get("provider", "?"))
        totals[key] += event["dur"] / 1000
    runs = max(runs, 1)
    return [
        NodeTime(name, op, provider, _stage_of(name, stages, ordered), ms / runs)
        for (name, op, provider), ms in totals.items()
    ]


def _precision_of(kernel: str) -> str:
    k = kernel.lower()
    if "i8" in k or "u8" in k or "int8" in k:
        return "int8"
    if "bf16" in k:
        return "bf16"
    if "f16" in k:
        return "f16"
    return "f32"


def summarize(nodes: List[NodeTime], top: int = 15) -> str:
    """Markdown tables: ms per stage (with the convolutions' kernel precisions), ms per node
    type, layout conversions, and the ``top`` slowest nodes."""
    total = sum(n.ms for n in nodes) or 1.0
    lines = ["| stage | ms | share | convolutions by precision (ms) |", "|---|---:|---:|---|"]
    order = list(STAGES) + ["other"]
    by_stage = collections.defaultdict(list)
    for n in nodes:
        by_stage[n.stage].append(n)
    for stage in order:
        group = by_stage.get(stage, [])
        if not group:
            continue
        ms = sum(n.ms for n in group)
        convs = collections.defaultdict(float)
        for n in group:
            if n.node_type in ("Convolution", "Conv", "GroupConvolution", "FusedConv"):
                convs[_precision_of(n.kernel)] += n.ms
        conv_text = ", ".join(f"{p} {v:.1f}" for p, v in sorted(convs.items())) or "-"
        lines.append(f"| {stage} | {ms:.1f} | {100 * ms / total:.0f}% | {conv_text} |")
    lines.append(f"| **total** | **{total:.1f}** | | |")
    lines += ["", "| node type | ms | nodes |", "|---|---:|---:|"]
    by_type = collections.defaultdict(lambda: [0.0, 0])
    for n in nodes:
        by_type[n.node_type][0] += n.ms
        by_type[n.node_type][1] += 1
    for node_type, (ms, count) in sorted(by_type.items(), key=lambda kv: -kv[1][0])[:12]:
        lines.append(f"| {node_type} | {ms:.1f} | {count} |")
    lines += ["", "| slowest nodes | stage | type | kernel | ms |", "|---|---|---|---|---:|"]
    for n in sorted(nodes, key=lambda n: -n.ms)[:top]:
        lines.append(f"| {n.name[:60]} | {n.stage} | {n.node_type} | {n.kernel} | {n.ms:.2f} |")
    return "\n".join(lines)
