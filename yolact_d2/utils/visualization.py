# Copyright (c) yolact_d2 contributors.
"""Drawing YOLACT predictions with Detectron2's Visualizer."""

import numpy as np

from detectron2.structures import Instances
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = ["draw_predictions", "draw_tracks", "filter_for_display", "track_colour"]


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


def track_colour(track_id: int) -> np.ndarray:
    """
    The colour a track is drawn in, the same in every frame: Detectron2's palette (74
    colours) indexed by the id.

    Returns:
        ndarray: (3,) RGB in [0, 1].
    """
    palette = colormap(rgb=True, maximum=1)
    return palette[int(track_id) % len(palette)]


def draw_tracks(image_rgb: np.ndarray, instances: Instances, metadata) -> np.ndarray:
    """
    Draws tracked detections (all of them: the tracker chose them), each in its track's colour
    (:func:`track_colour`), labelled "#id class score".

    Args:
        image_rgb (ndarray): (H, W, 3) uint8 RGB image.
        instances (Instances): tracked predictions with ``track_ids``, at the image's size.
        metadata: Detectron2 metadata with ``thing_classes``.

    Returns:
        ndarray: (H, W, 3) uint8 RGB drawing.
    """
    instances = instances.to("cpu")
    names = metadata.get("thing_classes", None)
    ids = instances.track_ids.tolist()
    labels = []
    for track_id, class_id, score in zip(
        ids, instances.pred_classes.tolist(), instances.scores.tolist()
    ):
        name = names[class_id] if names and class_id < len(names) else str(class_id)
        labels.append(f"#{track_id} {name} {score:.0%}")
    masks = np.asarray(instances.pred_masks) if instances.has("pred_masks") else None
    visualizer = Visualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
    drawing = visualizer.overlay_instances(
        boxes=instances.pred_boxes,
        labels=labels,
        masks=masks,
        assigned_colors=[track_colour(i) for i in ids],
    )
    return drawing.get_image()
