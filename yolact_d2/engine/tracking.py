# Copyright (c) yolact_d2 contributors.
"""
Instance tracking on video: identities that last across frames (``Instances.track_ids``) for
the predictions of any predictor that maps a BGR frame to ``{"instances": Instances}``
(:class:`~yolact_d2.engine.YolactPredictor`, its fast CPU path, an
:class:`~yolact_d2.deploy.ExportedPredictor`).

The association is ByteTrack as implemented by Roboflow's ``supervision`` (MIT; the optional
extra ``video``: ``pip install -e ".[video]"``); this module converts ``Instances`` to and from
its ``Detections`` and keeps the masks, classes and scores of the tracked detections. Why that
implementation and version: docs/GETTING_STARTED.md, "Tracking objects in a video".

Example::

    from yolact_d2.engine.tracking import track_video

    for frame_index, instances in track_video(predictor, "datasets/synthetic_video/video_00.mp4"):
        print(frame_index, instances.track_ids.tolist())

Output formats (:func:`track_results`, :func:`mot_lines`):

* json: COCO results (as ``tools/demo.py --output-json`` writes for images: "image_id",
  "category_id", "bbox" XYWH, "score", "segmentation" RLE) with "image_id" the frame index
  (from 0) and two more keys, "frame" (the same index) and "track_id" (from 1);
* MOTChallenge text: ``frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1`` with frames
  from 1, as the MOTChallenge benchmarks and ``motmetrics`` read it.
"""

import numpy as np
import time
import warnings
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import torch
from torchvision.ops import nms

from detectron2.structures import Instances

from yolact_d2.evaluation import instances_to_coco_results

__all__ = [
    "TRACKERS",
    "InstanceTracker",
    "track_frames",
    "track_video",
    "open_video",
    "video_frames",
    "track_results",
    "mot_lines",
    "write_mot",
    "read_mot",
]

# Names accepted by InstanceTracker (and tools/demo.py --track).
TRACKERS = ("bytetrack",)
# supervision warns that its ByteTrack moved to the `trackers` package, which requires numpy 2
# (the project is on numpy 1 for Detectron2): silenced exactly, where the tracker is built.
_BYTETRACK_MOVED = r"The `ByteTrack` was deprecated"


def _supervision():
    try:
        import supervision
    except ImportError as e:
        raise ImportError(
            'tracking needs the optional extra "video": pip install -e ".[video]"'
        ) from e
    return supervision


class InstanceTracker:
    """
    Turns a stream of per-frame ``Instances`` into tracked ``Instances``: the detections that
    belong to a track, in their input order, with ``track_ids`` (int64, from 1, stable across
    frames). Detections the tracker leaves out (too weak to start a track, or unmatched weak
    ones) are dropped, as Ultralytics' ``model.track`` does.

    Trackers (:data:`TRACKERS`): "bytetrack", ByteTrack (two-stage IoU association, high then
    low scores, with a Kalman filter per track), on boxes. YOLACT's mask coefficients
    (``MODEL.YOLACT.TEST.OUTPUT_COEFFICIENTS``) were measured as an added appearance cue and did
    not help (docs/GETTING_STARTED.md, "Tracking objects in a video").

    Attributes:
        frames (int): frames seen since the last :meth:`reset`.
        seconds (float): time spent in the tracker (conversion and association) over them.
    """

    def __init__(
        self,
        tracker: str = "bytetrack",
        frame_rate: float = 30.0,
        lost_track_buffer: int = 30,
        track_activation_threshold: float = 0.25,
        minimum_matching_threshold: float = 0.8,
        minimum_consecutive_frames: int = 1,
        min_score: float = 0.1,
        duplicate_iou: float = 0.7,
    ):
        """
        Args:
            tracker (str): one of :data:`TRACKERS`.
            frame_rate (float): of the video (the lost-track buffer is in frames at 30/s).
            lost_track_buffer (int): frames a lost track waits to be found again (at 30/s).
            track_activation_threshold (float): detections from this score are ByteTrack's
                first-stage ("high") detections; new tracks start from this score + 0.1.
            minimum_matching_threshold (float): largest association cost (1 - IoU x score).
            minimum_consecutive_frames (int): frames a new track needs before it has an id.
            min_score (float): detections below this score are not given to the tracker
                (ByteTrack ignores those below 0.1).
            duplicate_iou (float): of detections whose boxes overlap more (IoU), whatever
                their classes, only the best-scored one is given to the tracker: YOLACT's NMS is
                per class, and the same object found as two classes would start two tracks.
                1 keeps them all.
        """
        if tracker not in TRACKERS:
            raise ValueError(f"tracker must be one of {TRACKERS}, got {tracker!r}")
        self.name = tracker
        self.min_score = min_score
        self.duplicate_iou = duplicate_iou
        sv = _supervision()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_BYTETRACK_MOVED, category=FutureWarning)
            self._bytetrack = sv.ByteTrack(
                track_activation_threshold=track_activation_threshold,
                lost_track_buffer=lost_track_buffer,
                minimum_matching_threshold=minimum_matching_threshold,
                frame_rate=frame_rate,
                minimum_consecutive_frames=minimum_consecutive_frames,
            )
        self._detections = sv.Detections
        self.frames, self.seconds = 0, 0.0

    def reset(self) -> None:
        """Forgets all tracks (a new video); ids start from 1 again."""
        self._bytetrack.reset()
        self.frames, self.seconds = 0, 0.0

    def __call__(self, instances: Instances) -> Instances:
        """
        Args:
            instances (Instances): one frame's predictions, with ``pred_boxes`` (D, 4) XYXY
                pixels, ``scores`` (D,), ``pred_classes`` (D,) and any other fields (masks...).

        Returns:
            Instances: the D' <= D tracked detections (all their fields) and ``track_ids``
            (D',) int64, on the input's device.
        """
        start = time.perf_counter()
        boxes = instances.pred_boxes.tensor.detach().cpu().numpy()
        scores = instances.scores.detach().cpu().numpy()
        classes = instances.pred_classes.detach().cpu().numpy()
        candidates = np.nonzero(scores >= self.min_score)[0]
        if self.duplicate_iou < 1 and len(candidates) > 1:
            kept_boxes = torch.from_numpy(boxes[candidates]).float()
            kept_scores = torch.from_numpy(scores[candidates]).float()
            order = nms(kept_boxes, kept_scores, self.duplicate_iou).numpy()
            candidates = np.sort(candidates[order])
        detections = self._detections(
            xyxy=boxes[candidates].astype(np.float32),
            confidence=scores[candidates].astype(np.float32),
            class_id=classes[candidates].astype(np.int64),
            data={"index": candidates},
        )
        tracked = self._bytetrack.update_with_detections(detections)
        if len(tracked):
            order = np.argsort(tracked.data["index"], kind="stable")
            kept = tracked.data["index"][order]
            ids = np.asarray(tracked.tracker_id)[order].astype(np.int64)
        else:
            kept, ids = np.zeros(0, np.int64), np.zeros(0, np.int64)
        device = instances.scores.device
        result = instances[torch.as_tensor(kept, dtype=torch.int64, device=device)]
        result.track_ids = torch.as_tensor(ids, dtype=torch.int64, device=device)
        self.frames += 1
        self.seconds += time.perf_counter() - start
        return result


Source = Union[str, int, cv2.VideoCapture, Iterable[np.ndarray]]


def open_video(source: Union[str, int]) -> cv2.VideoCapture:
    """
    Opens a video file, or a camera by index (an int, or a str of digits).

    Raises:
        OSError: it cannot be opened.
    """
    if isinstance(source, str) and source.isdigit():
        source = int(source)
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise OSError(f"cannot open {'camera' if isinstance(source, int) else 'video'} {source!r}")
    return capture


def video_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """The (H, W, 3) uint8 BGR frames of an opened capture, until it ends."""
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def track_frames(
    predictor: Callable[[np.ndarray], Dict],
    frames: Iterable[np.ndarray],
    tracker: Union[str, InstanceTracker] = "bytetrack",
    **tracker_options,
) -> Iterator[Tuple[int, Instances]]:
    """
    Predicts and tracks a sequence of frames.

    Args:
        predictor (callable): (H, W, 3) uint8 BGR image -> {"instances": Instances}.
        frames (iterable[ndarray]): BGR frames in order.
        tracker (str or InstanceTracker): a name of :data:`TRACKERS` or a tracker to continue.
        tracker_options: for :class:`InstanceTracker` when ``tracker`` is a name.

    Yields:
        (frame_index, Instances): the frame index from 0 and its tracked detections
        (:meth:`InstanceTracker.__call__`).
    """
    if isinstance(tracker, str):
        tracker = InstanceTracker(tracker, **tracker_options)
    for index, frame in enumerate(frames):
        yield index, tracker(predictor(frame)["instances"])


def track_video(
    predictor: Callable[[np.ndarray], Dict],
    source: Source,
    tracker: Union[str, InstanceTracker] = "bytetrack",
    **tracker_options,
) -> Iterator[Tuple[int, Instances]]:
    """
    Predicts and tracks every frame of a video file or a camera.

    Args:
        predictor (callable): (H, W, 3) uint8 BGR image -> {"instances": Instances}, e.g. a
            :class:`~yolact_d2.engine.YolactPredictor`.
        source: a video path, a camera index, an opened ``cv2.VideoCapture`` or BGR frames.
        tracker (str or InstanceTracker): see :func:`track_frames`.
        tracker_options: for :class:`InstanceTracker`; ``frame_rate`` defaults to the video's.

    Yields:
        (frame_index, Instances): as :func:`track_frames`.
    """
    if isinstance(source, (str, int)):
        capture = open_video(source)
    elif isinstance(source, cv2.VideoCapture):
        capture = source
    else:
        yield from track_frames(predictor, source, tracker, **tracker_options)
        return
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        if isinstance(tracker, str) and fps and fps > 0:
            tracker_options.setdefault("frame_rate", fps)
        yield from track_frames(predictor, video_frames(capture), tracker, **tracker_options)
    finally:
        if capture is not source:
            capture.release()


def track_results(
    instances: Instances,
    frame: int,
    category_ids: Optional[Sequence[int]] = None,
    polygons: bool = False,
) -> List[Dict]:
    """
    One frame's tracked detections as COCO results plus "frame" and "track_id" (the format of
    ``tools/demo.py --track --output-json``; see the module's docstring).

    Args:
        instances (Instances): tracked detections (with ``track_ids``).
        frame (int): the frame index from 0 (also written as "image_id").
        category_ids (list[int] or None): see
            :func:`~yolact_d2.evaluation.instances_to_coco_results`.
        polygons (bool): also write "polygons".

    Returns:
        list[dict]: one result per detection.
    """
    instances = instances.to("cpu")
    results = instances_to_coco_results(instances, frame, category_ids, polygons)
    for result, track_id in zip(results, instances.track_ids.tolist()):
        result["frame"] = frame
        result["track_id"] = int(track_id)
    return results


def mot_lines(instances: Instances, frame: int) -> List[str]:
    """
    One frame's tracked boxes as MOTChallenge lines:
    ``frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1`` with ``frame`` counted from 1
    (``frame`` is given from 0, as everywhere else here).
    """
    instances = instances.to("cpu")
    boxes = instances.pred_boxes.tensor.tolist()
    lines = []
    for (x0, y0, x1, y1), score, track_id in zip(
        boxes, instances.scores.tolist(), instances.track_ids.tolist()
    ):
        lines.append(
            f"{frame + 1},{track_id},{x0:.2f},{y0:.2f},{x1 - x0:.2f},{y1 - y0:.2f},"
            f"{score:.4f},-1,-1,-1"
        )
    return lines


def write_mot(path: str, lines: Iterable[str]) -> None:
    """Writes MOTChallenge lines (:func:`mot_lines`) to a text file."""
    with open(path, "w") as f:
        for line in lines:
            f.write(line + "\n")


def read_mot(path: str) -> np.ndarray:
    """
    Reads a MOTChallenge text file (results or ground truth).

    Returns:
        ndarray: (N, C) float64 rows, C >= 6: frame (from 1), id, left, top, width, height, ...
    """
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rows.append([float(v) for v in line.strip().split(",")])
    if not rows:
        return np.zeros((0, 10))
    return np.asarray(rows, dtype=np.float64)
