# Copyright (c) yolact_d2 contributors.
"""Exporting YOLACT as one graph (ONNX, torch.export) and running the exported model."""

from .export import (
    FORMATS,
    build_export_model,
    deploy_metadata,
    export_model,
    export_onnx,
    export_program,
    export_pt2,
    uses_deformable_conv,
)
from .graph import YolactInferenceGraph
from .predictor import RUNTIMES, ExportedPredictor, read_metadata

__all__ = [
    "FORMATS",
    "ExportedPredictor",
    "RUNTIMES",
    "YolactInferenceGraph",
    "build_export_model",
    "deploy_metadata",
    "export_model",
    "export_onnx",
    "export_program",
    "export_pt2",
    "read_metadata",
    "uses_deformable_conv",
]
