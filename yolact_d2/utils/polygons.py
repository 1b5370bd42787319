# Copyright (c) yolact_d2 contributors.
"""Instance masks as polygons: outer contours and their holes, in image pixels."""

import numpy as np
from typing import Dict, List

import cv2

__all__ = ["mask_to_polygons"]


def mask_to_polygons(mask: np.ndarray) -> List[Dict[str, List]]:
    """
    The polygons of a binary mask: one per connected region (8-connected), each with its
    outer contour and the contours of its holes, as OpenCV traces them on pixel centres.

    Args:
        mask (ndarray): (H, W) bool or 0/1.

    Returns:
        list[dict]: {"exterior": [x0, y0, x1, y1, ...], "holes": [[x0, y0, ...], ...]} per region,
        coordinates in image pixels (integers), largest region first. A region of one pixel is a
        one-point polygon.
    """
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"mask_to_polygons takes an (H, W) mask, got shape {mask.shape}")
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]  # (n, 4): next, previous, first child, parent
    polygons = []
    for i, contour in enumerate(contours):
        if hierarchy[i][3] >= 0:  # a hole: listed with its parent
            continue
        holes, child = [], hierarchy[i][2]
        while child >= 0:
            holes.append(contours[child].reshape(-1).tolist())
            child = hierarchy[child][0]
        area = cv2.contourArea(contour)
        polygons.append((area, {"exterior": contour.reshape(-1).tolist(), "holes": holes}))
    polygons.sort(key=lambda item: -item[0])
    return [p for _, p in polygons]
