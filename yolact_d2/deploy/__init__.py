# Copyright (c) yolact_d2 contributors.
"""Exporting YOLACT as one graph (ONNX, torch.export) and running the exported model."""

from .export import (
    FORMATS,
    build_export_model,
    export_model,
    export_onnx,
    export_program,
    export_pt2,
)
from .graph import GRAPHS, YolactInferenceGraph, YolactNetworkGraph
from .metadata import deploy_metadata, read_metadata, uses_deformable_conv
from .predictor import ONNX_RUNTIMES, RUNTIMES, ExportedPredictor
from .quantize import INT8_FILE, quantize_int8

__all__ = [
    "FORMATS",
    "GRAPHS",
    "INT8_FILE",
    "ExportedPredictor",
    "ONNX_RUNTIMES",
    "RUNTIMES",
    "YolactInferenceGraph",
    "YolactNetworkGraph",
    "build_export_model",
    "deploy_metadata",
    "export_model",
    "export_onnx",
    "export_program",
    "export_pt2",
    "quantize_int8",
    "read_metadata",
    "uses_deformable_conv",
]
