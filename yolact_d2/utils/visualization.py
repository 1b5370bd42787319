# Copyright (c) yolact_d2 contributors.
"""Drawing YOLACT predictions with Detectron2's Visualizer."""

import numpy as np

from detectron2.structures import Instances
from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = ["draw_predictions", "filter_for_display"]


def filter_for_display(instances: Instances, score_threshold: float) -> Instances:
    """
    Keeps the detections shown in demos (``MODEL.YOLACT.TEST.DISPLAY_SCORE_THRESH``); the model's
    own output, used for evaluation, is never filtered this way.

    Args:
        instances (Instances): predictions of one image.
        score_threshold (float): minimum score shown.

    Returns:
        Instances: the shown subset, on CPU.
    """
    instances = instances.to("cpu")
    return instances[instances.scores >= score_threshold]


def draw_predictions(
    image_rgb: np.ndarray, instances: Instances, metadata, score_threshold: float
) -> np.ndarray:
    """
    Args:
        image_rgb (ndarray): (H, W, 3) uint8 RGB image.
        instances (Instances): predictions at the image's size.
        metadata: Detectron2 metadata with ``thing_classes``.
        score_threshold (float): see :func:`filter_for_display`.

    Returns:
        ndarray: (H, W, 3) uint8 RGB drawing.
    """
    shown = filter_for_display(instances, score_threshold)
    visualizer = Visualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
    return visualizer.draw_instance_predictions(shown).get_image()
