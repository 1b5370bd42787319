# Copyright (c) yolact_d2 contributors.
"""Model size and compute: parameter count and FLOPs (fvcore, via Detectron2's tracing)."""

import logging
from typing import Dict

import torch

from detectron2.utils.analysis import FlopCountAnalysis

__all__ = ["count_parameters", "count_gflops"]

logger = logging.getLogger(__name__)


def count_parameters(model: torch.nn.Module) -> int:
    """All parameters of the model (including training-only branches such as YOLACT's
    semantic-segmentation conv)."""
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: torch.nn.Module, inputs: Dict) -> float:
    """
    fvcore's count for one model input, with Detectron2's ``FlopCountAnalysis`` (which traces
    the whole ``model([inputs])``, pre- and post-processing included, and ignores element-wise
    operators). fvcore counts one multiply-add as one flop; the count of detectors whose heads
    run per detection (Mask R-CNN's box and mask heads) depends on the number of detections.

    Args:
        model (nn.Module): a Detectron2 model in eval mode.
        inputs (dict): one model input ("image", "height", "width").

    Returns:
        float: GFLOPs, NaN if tracing fails.
    """
    try:
        with torch.no_grad():
            analysis = FlopCountAnalysis(model, [inputs])
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            return analysis.total() / 1e9
    except Exception as e:  # tracing arbitrary models can fail; the count is optional
        logger.warning(f"FLOP count failed: {e}")
        return float("nan")
