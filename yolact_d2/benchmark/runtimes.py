# Copyright (c) yolact_d2 contributors.
"""
The exported model on other runtimes as benchmark rows: a YOLACT config exported once to ONNX
(same seeded or loaded weights as its PyTorch rows) and timed through
:class:`~yolact_d2.deploy.ExportedPredictor` on onnxruntime and OpenVINO.
"""

import contextlib
import logging
import numpy as np
import os
from typing import Dict, Optional, Sequence, Tuple

from detectron2.config import CfgNode

from .predictor import build_predictor, config_label

__all__ = ["RUNTIMES", "RuntimePredictor", "build_runtime_predictor", "runtime_precisions"]

logger = logging.getLogger(__name__)

# "pytorch" is the PyTorch model in each --precision; the others run the exported ONNX model.
RUNTIMES = ("pytorch", "onnxruntime", "openvino")


def runtime_precisions(runtime: str, precisions: Sequence[str]) -> Tuple[str, ...]:
    """
    The precisions a runtime row is measured in: fp32 always, and OpenVINO's own bf16
    inference precision when bf16 is asked for.
    """
    if runtime == "openvino" and "bf16" in precisions:
        return ("fp32", "bf16")
    return ("fp32",)


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


def build_runtime_predictor(
    name: str,
    runtime: str,
    precision: str,
    opts: Sequence[str],
    weights: Optional[str],
    seed: int,
    threads: int,
    export_dir: str,
) -> RuntimePredictor:
    """
    Exports the config's fp32 model (built as :func:`build_predictor` builds it: same seed, same
    weights) to ``export_dir/<config label>/model.onnx`` once per process and loads it on
    ``runtime``.
    """
    from yolact_d2.deploy import ExportedPredictor, export_model

    reference = build_predictor(name, "fp32", "cpu", opts, weights=weights, seed=seed)
    key = (name, tuple(opts), weights, seed)
    if key not in _EXPORTS or not os.path.isfile(_EXPORTS[key]):
        directory = os.path.join(export_dir, config_label(name).replace("/", "_"))
        logger.info(f"[{config_label(name)}] exporting to {directory}")
        _EXPORTS[key] = export_model(reference.cfg, reference.model, "onnx", directory)
    exported = ExportedPredictor(_EXPORTS[key], runtime, num_threads=threads, precision=precision)
    return RuntimePredictor(reference.cfg, exported)
