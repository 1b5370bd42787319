# Copyright (c) yolact_d2 contributors.
"""Parity of an exported model with the PyTorch model it came from."""

import numpy as np
from typing import Iterable

import torch

from yolact_d2.data.image_io import model_input
from yolact_d2.evaluation.mask_agreement import MaskAgreement

from .predictor import ExportedPredictor

__all__ = ["SCORE_TOLERANCE", "BOX_TOLERANCE", "pytorch_instances", "compare_with_pytorch"]

# "The same detection": same class, scores within SCORE_TOLERANCE, boxes within BOX_TOLERANCE px.
SCORE_TOLERANCE = 1e-3
BOX_TOLERANCE = 1.0


def pytorch_instances(model: torch.nn.Module, bgr: np.ndarray):
    """What ``DefaultPredictor`` returns for a BGR image (the model at the image's size)."""
    with torch.no_grad():
        return model([model_input(bgr, model.input_format)])[0]["instances"]


def compare_with_pytorch(
    model: torch.nn.Module,
    path: str,
    runtime: str,
    images: Iterable[np.ndarray],
    predictor: ExportedPredictor = None,
    **predictor_kwargs,
) -> MaskAgreement:
    """
    Runs the PyTorch model and the exported one on the same BGR images and matches their
    detections one to one (same class, |score difference| <= :data:`SCORE_TOLERANCE`, box
    coordinates within :data:`BOX_TOLERANCE` px), comparing the masks of matched pairs.

    Args:
        model (Yolact): the eval-mode PyTorch model.
        path (str): the exported file.
        runtime (str): see :class:`ExportedPredictor`.
        images (iterable[ndarray]): (H, W, 3) uint8 BGR images.
        predictor (ExportedPredictor or None): reuse one instead of loading ``path``.

    Returns:
        MaskAgreement: with ``one_to_one_fraction`` and ``mean_iou`` (str() summarises it).
    """
    predictor = predictor or ExportedPredictor(path, runtime, **predictor_kwargs)
    agreement = _Agreement(score_tolerance=SCORE_TOLERANCE, box_tolerance=BOX_TOLERANCE)
    for bgr in images:
        agreement.add(pytorch_instances(model, bgr), predictor(bgr)["instances"])
    return agreement


class _Agreement(MaskAgreement):
    def __str__(self):
        return (
            f"{len(self.ious)} of {self.num_reference} PyTorch / {self.num_other} exported "
            f"detections matched one to one ({100 * self.one_to_one_fraction:.2f}%: same class, "
            f"|score difference| <= {self.score_tolerance}, boxes within {self.box_tolerance} "
            f"px), mean mask IoU {self.mean_iou:.4f}"
        )
