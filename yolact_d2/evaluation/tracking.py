# Copyright (c) yolact_d2 contributors.
"""
Multi-object tracking metrics with ``motmetrics`` (the optional extra ``video``): MOTA, IDF1
and ID switches of tracks against ground truth with identities, both given in the per-frame
COCO-style format of ``tools/demo.py --track --output-json`` ("frame", "track_id", "bbox" XYWH
and, for the mask variant, "segmentation" as RLE; yolact_d2.data.synthetic_video writes its
ground truth so).

A prediction matches a ground-truth object of the same frame when their IoU is at least 0.5
(boxes, as MOTChallenge; or masks, as MOTS), one to one (Hungarian); a match that changes the
ground truth's previous prediction id is an ID switch.
"""

import numpy as np
from collections import defaultdict
from typing import Dict, List, Sequence

import pycocotools.mask as mask_util

__all__ = ["METRICS", "tracking_accumulator", "summarize_tracking"]

# motmetrics' names of what summarize_tracking reports.
METRICS = ("mota", "idf1", "num_switches", "precision", "recall", "num_frames")


def _motmetrics():
    try:
        import motmetrics
    except ImportError as e:
        raise ImportError(
            'tracking metrics need the optional extra "video": pip install -e ".[video]"'
        ) from e
    return motmetrics


def _by_frame(records: Sequence[Dict]) -> Dict[int, List[Dict]]:
    frames = defaultdict(list)
    for record in records:
        frames[int(record["frame"])].append(record)
    return frames


def _distances(truth: List[Dict], predicted: List[Dict], masks: bool, min_iou: float):
    """(G, P) 1 - IoU, NaN where the IoU is below ``min_iou`` (no match possible)."""
    if not truth or not predicted:
        return np.zeros((len(truth), len(predicted)))
    if masks:
        iou = mask_util.iou(
            [t["segmentation"] for t in truth],
            [p["segmentation"] for p in predicted],
            [0] * len(predicted),
        )
    else:
        iou = mask_util.iou(
            [t["bbox"] for t in truth], [p["bbox"] for p in predicted], [0] * len(predicted)
        )
    distances = 1 - np.asarray(iou, dtype=np.float64).reshape(len(truth), len(predicted))
    distances[distances > 1 - min_iou] = np.nan
    return distances


def tracking_accumulator(
    truth: Sequence[Dict],
    predicted: Sequence[Dict],
    num_frames: int,
    masks: bool = False,
    min_iou: float = 0.5,
):
    """
    Matches one video's tracks to its ground truth, frame by frame.

    Args:
        truth (list[dict]): ground-truth records ("frame", "track_id", "bbox", and
            "segmentation" for ``masks``).
        predicted (list[dict]): tracked predictions in the same format.
        num_frames (int): frames of the video (frames without any record count too).
        masks (bool): match by mask IoU instead of box IoU.
        min_iou (float): the least IoU of a match.

    Returns:
        motmetrics.MOTAccumulator: the video's events, for :func:`summarize_tracking`.
    """
    mm = _motmetrics()
    accumulator = mm.MOTAccumulator(auto_id=False)
    truth_frames, predicted_frames = _by_frame(truth), _by_frame(predicted)
    for frame in range(num_frames):
        t, p = truth_frames.get(frame, []), predicted_frames.get(frame, [])
        accumulator.update(
            [r["track_id"] for r in t],
            [r["track_id"] for r in p],
            _distances(t, p, masks, min_iou),
            frameid=frame,
        )
    return accumulator


def summarize_tracking(accumulators: Dict[str, object]) -> Dict[str, Dict[str, float]]:
    """
    The metrics of :data:`METRICS` for each video and over all of them ("OVERALL": the events
    of all videos pooled, as MOTChallenge's combined scores).

    Args:
        accumulators (dict[str, MOTAccumulator]): per video name.

    Returns:
        dict[str, dict[str, float]]: metric values per video name and "OVERALL".
    """
    mm = _motmetrics()
    names = list(accumulators)
    summary = mm.metrics.create().compute_many(
        [accumulators[n] for n in names], metrics=list(METRICS), names=names, generate_overall=True
    )
    return {
        name: {metric: float(summary.loc[name, metric]) for metric in METRICS}
        for name in summary.index
    }
