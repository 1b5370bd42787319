# Copyright (c) yolact_d2 contributors.
"""
What ``tools/demo.py`` does: predictions on images (files, globs, folders, a registered dataset),
videos and cameras, drawn with Detectron2's ``Visualizer`` and written as COCO results.
"""

import glob
import numpy as np
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import tqdm

from detectron2.data import DatasetCatalog, MetadataCatalog

from yolact_d2.data.image_io import ImageInputError, read_image_bgr
from yolact_d2.evaluation import instances_to_coco_results
from yolact_d2.utils.visualization import draw_predictions, draw_tracks

from .cli import ToolInputError
from .tracking import mot_lines, track_results

__all__ = [
    "IMAGE_EXTENSIONS",
    "DemoInputError",
    "DemoImage",
    "VideoStats",
    "list_image_files",
    "coco_style_id",
    "read_images",
    "file_images",
    "dataset_images",
    "dataset_category_ids",
    "Demo",
    "metadata_of",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# An input, config, weights file or output location that does not exist or cannot work.
DemoInputError = ToolInputError


def list_image_files(inputs: Sequence[str], missing: Optional[List[str]] = None) -> List[str]:
    """
    Image files from files, globs and folders (searched recursively for the extensions of
    :data:`IMAGE_EXTENSIONS`), in a stable order: the inputs in their order, each folder's
    files sorted by path. A file named explicitly is taken whatever its extension.

    Args:
        inputs: files, folders and globs.
        missing: if given, inputs that match nothing are appended to it instead of raising.

    Raises:
        DemoInputError: an input that is neither a file, a folder nor a glob matching anything
            (without ``missing``).
    """
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = []
            for root, dirs, names in os.walk(item):
                dirs.sort()
                found += [
                    os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)
                ]
            files += sorted(found)
        elif os.path.isfile(item):
            files.append(item)
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                if missing is None:
                    raise DemoInputError(f"input {item!r} does not exist")
                missing.append(item)
            files += [m for m in matches if os.path.isfile(m)]
    return files


@dataclass
class DemoImage:
    """
    One image to predict: its COCO image id, a name, and its pixels (None if unreadable, with
    the reason in ``error``).
    """

    image_id: int
    name: str
    bgr: Optional[np.ndarray]
    error: str = ""


def _read(image_id: int, path: str) -> DemoImage:
    try:
        return DemoImage(image_id, path, read_image_bgr(path))
    except ImageInputError as e:
        return DemoImage(image_id, path, None, str(e))


def coco_style_id(path: str, position: int) -> int:
    """
    The image id of a file among the inputs: the number of a COCO-style name
    (``000000000139.jpg`` -> 139), else its ``position`` in the input list.
    """
    stem = os.path.splitext(os.path.basename(path))[0]
    return int(stem) if stem.isdigit() else position


def read_images(entries: Iterable[Tuple[int, str]]) -> Iterator[DemoImage]:
    """
    Reads (image id, path) pairs lazily as :func:`file_images` does (unreadable images come
    with ``bgr`` None and the reason): what ``tools/predict_dataset.py``'s workers read.
    """
    for image_id, path in entries:
        yield _read(image_id, path)


def file_images(files: Sequence[str]) -> Iterator[DemoImage]:
    """
    Reads ``files`` lazily with :func:`~yolact_d2.data.image_io.read_image_bgr` (EXIF
    orientation applied; image id: the number of a COCO-style name, else the position).
    """
    for position, path in enumerate(files):
        yield _read(coco_style_id(path, position), path)


def dataset_images(dataset_name: str) -> Iterator[DemoImage]:
    """The images of a registered dataset, with the dataset's image ids."""
    for record in DatasetCatalog.get(dataset_name):
        yield _read(record["image_id"], record["file_name"])


def dataset_category_ids(metadata) -> Optional[List[int]]:
    """The dataset's category id of each contiguous class, when its metadata maps them."""
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None)
    if not mapping:
        return None
    return [d for d, _ in sorted(mapping.items(), key=lambda item: item[1])]


@dataclass
class VideoStats:
    """Frames of a video or camera run and their rates."""

    frames: int = 0
    model_seconds: float = 0.0
    total_seconds: float = 0.0
    tracker_seconds: float = 0.0

    @property
    def model_fps(self) -> float:
        """Frames per second of the predictor calls alone."""
        return self.frames / self.model_seconds if self.model_seconds else float("nan")

    @property
    def end_to_end_fps(self) -> float:
        """Frames per second of decode + predict + draw + encode."""
        return self.frames / self.total_seconds if self.total_seconds else float("nan")

    @property
    def tracker_ms_per_frame(self) -> float:
        """Milliseconds per frame spent in the tracker (0 without one)."""
        return 1000 * self.tracker_seconds / self.frames if self.frames else float("nan")


@dataclass
class Demo:
    """
    Predicts, draws and collects COCO results.

    Attributes:
        predictor: a :class:`~yolact_d2.engine.YolactPredictor` (one BGR image or a list).
        metadata: Detectron2 metadata (class names for drawings, category ids for results).
        confidence_threshold (float): detections drawn from this score (results keep all).
        polygons (bool): add each mask's polygons to the results.
        batch_size (int): images per model call.
        results (list[dict]): the collected COCO results (with "frame" and "track_id" when
            tracking).
        mot (list[str]): the collected MOTChallenge lines, when tracking.
    """

    predictor: object
    metadata: object
    confidence_threshold: float = 0.3
    polygons: bool = False
    batch_size: int = 1
    results: List[Dict] = field(default_factory=list)
    failed: List[str] = field(default_factory=list)
    mot: List[str] = field(default_factory=list)

    def __post_init__(self):
        self.category_ids = dataset_category_ids(self.metadata)

    def draw(self, bgr: np.ndarray, instances) -> np.ndarray:
        """(H, W, 3) BGR drawing of the shown detections."""
        rgb = draw_predictions(bgr[:, :, ::-1], instances, self.metadata, self.confidence_threshold)
        return np.ascontiguousarray(rgb[:, :, ::-1])

    def collect(self, instances, image_id: int, **extra) -> None:
        """Adds one image's detections to :attr:`results` (COCO results format)."""
        results = instances_to_coco_results(
            instances.to("cpu"), image_id, self.category_ids, self.polygons
        )
        for result in results:
            result.update(extra)
        self.results += results

    def run_images(
        self, images: Iterable[DemoImage], total: Optional[int] = None
    ) -> Iterator[Tuple[DemoImage, object]]:
        """
        Predicts images ``batch_size`` at a time with a progress bar (images/s); unreadable
        images are recorded in :attr:`failed` and skipped.

        Yields:
            (DemoImage, Instances) per readable image, in order.
        """
        bar = tqdm.tqdm(total=total, unit="img", dynamic_ncols=True, leave=True)
        batch: List[DemoImage] = []
        for image in images:
            if image.bgr is None:
                self.failed.append(image.name)
                tqdm.tqdm.write(f"{image.error}; skipped", file=sys.stderr)
                bar.update(1)
                continue
            batch.append(image)
            if len(batch) == self.batch_size:
                yield from self._predict(batch, bar)
                batch = []
        if batch:
            yield from self._predict(batch, bar)
        bar.close()

    def _predict(self, batch: List[DemoImage], bar) -> Iterator[Tuple[DemoImage, object]]:
        if len(batch) == 1:
            outputs = [self.predictor(batch[0].bgr)]
        else:
            outputs = self.predictor([image.bgr for image in batch])
        bar.update(len(batch))
        for image, output in zip(batch, outputs):
            yield image, output["instances"]

    def run_video(
        self,
        capture: cv2.VideoCapture,
        writer=None,
        show: bool = False,
        window: str = "YOLACT",
        tracker=None,
    ) -> VideoStats:
        """
        Predicts and draws every frame of ``capture`` (a video file or a camera) until the
        stream ends (or Esc in the window), writing drawings to ``writer`` and results with the
        frame index as image id.

        With a ``tracker`` (:class:`~yolact_d2.engine.tracking.InstanceTracker`), only the
        tracked detections are drawn (a colour per track) and collected, with "frame" and
        "track_id" in the results and MOTChallenge lines in :attr:`mot`.

        Returns:
            VideoStats: frame count, the model-only and end-to-end rates and the tracker's time.
        """
        stats = VideoStats()
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        bar = tqdm.tqdm(total=frames, unit="frame", dynamic_ncols=True)
        start = time.perf_counter()
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            tick = time.perf_counter()
            instances = self.predictor(frame)["instances"]
            stats.model_seconds += time.perf_counter() - tick
            if tracker is None:
                self.collect(instances, stats.frames)
                drawing = self.draw(frame, instances)
            else:
                tick = time.perf_counter()
                instances = tracker(instances)
                stats.tracker_seconds += time.perf_counter() - tick
                self.results += track_results(
                    instances, stats.frames, self.category_ids, self.polygons
                )
                self.mot += mot_lines(instances, stats.frames)
                rgb = draw_tracks(frame[:, :, ::-1], instances, self.metadata)
                drawing = np.ascontiguousarray(rgb[:, :, ::-1])
            if writer is not None:
                writer.write(drawing)
            stats.frames += 1
            bar.update(1)
            if show:
                cv2.imshow(window, drawing)
                if cv2.waitKey(1) == 27:  # Esc
                    break
        stats.total_seconds = time.perf_counter() - start
        bar.close()
        return stats


def metadata_of(cfg, dataset_name: Optional[str] = None):
    """The metadata of ``dataset_name``, else of the config's first test dataset."""
    name = dataset_name or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    return MetadataCatalog.get(name)
