# Copyright (c) yolact_d2 contributors.
"""
The exported model on other runtimes as benchmark rows: a YOLACT config exported once to ONNX
(same seeded or loaded weights as its PyTorch rows) and timed through
:class:`~yolact_d2.deploy.ExportedPredictor` on onnxruntime and OpenVINO: the whole pipeline, or
(runtimes named "<runtime>-network") the network graph post-processed in PyTorch.
"""

import contextlib
import logging
import numpy as np
import os
from typing import Dict, Optional, Sequence, Tuple

from detectron2.config import CfgNode

from yolact_d2.deploy.predictor import ONNX_RUNTIMES

from .predictor import build_predictor, config_label

__all__ = [
    "RUNTIMES",
    "RuntimePredictor",
    "build_runtime_predictor",
    "runtime_precisions",
    "split_runtime",
]

logger = logging.getLogger(__name__)

# The benchmark's rows: "pytorch" is the PyTorch model in each --precision; the ONNX runtimes
# (:data:`~yolact_d2.deploy.ONNX_RUNTIMES`) run the exported ONNX model, the whole pipeline, and
# as "<runtime>-network" its network graph (``tools/export_model.py --graph network``) with the
# model's PyTorch post-processing after it; "original" is the original implementation
# (dbolya/yolact) on the same weights, in fp32 (:mod:`yolact_d2.benchmark.original`).
NETWORK_SUFFIX = "-network"
RUNTIMES = (
    ("pytorch",)
    + ONNX_RUNTIMES
    + tuple(runtime + NETWORK_SUFFIX for runtime in ONNX_RUNTIMES)
    + ("original",)
)


def split_runtime(runtime: str) -> Tuple[str, str]:
    """A benchmark runtime name as (runtime of ExportedPredictor, exported graph)."""
    if runtime.endswith(NETWORK_SUFFIX):
        return runtime[: -len(NETWORK_SUFFIX)], "network"
    return runtime, "pipeline"


def runtime_precisions(runtime: str, precisions: Sequence[str]) -> Tuple[str, ...]:
    """
    The precisions a runtime row is measured in: fp32 always, and on OpenVINO its own bf16
    inference precision and the int8 model (:func:`~yolact_d2.deploy.quantize_int8`) when they
    are asked for.
    """
    if split_runtime(runtime)[0] != "openvino":
        return ("fp32",)
    return ("fp32",) + tuple(p for p in ("bf16", "int8") if p in precisions)


class RuntimePredictor:
    """
    An :class:`~yolact_d2.deploy.ExportedPredictor` with what the benchmark uses of a
    :class:`BenchmarkPredictor`: the config, a Detectron2-style ``model`` (for AP) and
    ``autocast()`` (a no-op: the runtime has its own precision).
    """

    def __init__(self, cfg: CfgNode, exported):
        self.cfg = cfg
        self.exported = exported
        self.model = exported.as_model()
        self.precision = exported.precision

    def autocast(self):
        return contextlib.nullcontext()

    def __call__(self, original_image: np.ndarray) -> Dict:
        return self.exported(original_image)


_EXPORTS: Dict[Tuple, str] = {}
_INT8: Dict[Tuple, str] = {}


def build_runtime_predictor(
    name: str,
    runtime: str,
    precision: str,
    opts: Sequence[str],
    weights: Optional[str],
    seed: int,
    threads: int,
    export_dir: str,
    quantization_images: Optional[Sequence[np.ndarray]] = None,
) -> RuntimePredictor:
    """
    Exports the config's fp32 model (built as :func:`build_predictor` builds it: same seed, same
    weights) to ``export_dir/<config label>/model.onnx`` (the network graph, for runtimes named
    "<runtime>-network", to ``export_dir/<config label>_network/``) once per process and loads
    it on the runtime; for precision "int8" the export is quantised once
    (:func:`~yolact_d2.deploy.quantize_int8` on ``quantization_images``, BGR) and the int8 IR
    is loaded on OpenVINO.
    """
    from yolact_d2.deploy import ExportedPredictor, export_model, quantize_int8

    runtime, graph = split_runtime(runtime)
    reference = build_predictor(name, "fp32", "cpu", opts, weights=weights, seed=seed)
    key = (name, tuple(opts), weights, seed, graph)
    directory = os.path.join(export_dir, config_label(name).replace("/", "_"))
    if graph != "pipeline":
        directory += f"_{graph}"
    if key not in _EXPORTS or not os.path.isfile(_EXPORTS[key]):
        logger.info(f"[{config_label(name)}] exporting to {directory}")
        _EXPORTS[key] = export_model(reference.cfg, reference.model, "onnx", directory, graph=graph)
    path, run_precision = _EXPORTS[key], precision
    if precision == "int8":
        if not quantization_images:
            raise ValueError("int8 rows need calibration images (--calibration-dataset)")
        if key not in _INT8 or not os.path.isfile(_INT8[key]):
            _INT8[key] = quantize_int8(path, quantization_images)
        path, run_precision = _INT8[key], "fp32"
    exported = ExportedPredictor(path, runtime, num_threads=threads, precision=run_precision)
    predictor = RuntimePredictor(reference.cfg, exported)
    predictor.precision = precision
    return predictor
