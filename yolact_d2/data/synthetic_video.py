# Copyright (c) yolact_d2 contributors.
"""
Synthetic videos with known identities, for measuring trackers: the shapes of
:mod:`yolact_d2.data.synthetic` (same classes, sizes, colours and textured backgrounds as the
main job's training images) moving over a fixed background.

Each object keeps its class, colour, size and identity for the whole video; it moves with a
constant velocity plus a small constant acceleration (and a slow spin), and may enter or leave
the frame. Two kinds of video:

* "lanes" (``crossing=False``): every object moves along its own horizontal lane, so no two
  objects ever touch; objects enter and leave through the left and right edges.
* "crossing" (``crossing=True``): objects move in all directions and cross each other; an
  object drawn later passes in front of earlier ones, and at least one object is completely
  hidden behind another for a few frames (then reappears).

The ground truth of a frame is what is visible: an object whose visible part (inside the frame,
not covered) is below ``min_visible_area`` pixels is absent from that frame, as in the image
dataset. Everything is a function of the spec.

:func:`write_synthetic_videos` writes the set used for the tracking table of
docs/GETTING_STARTED.md: per video an mp4 file, its ground truth as a MOTChallenge ``gt.txt``
and as per-frame COCO-style json with masks (the format ``tools/demo.py --track --output-json``
writes), and a ``videos.json`` index.
"""

import json
import numpy as np
import os
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Tuple

import cv2
import pycocotools.mask as mask_util

from .synthetic import _SHAPE_RADII, SYNTHETIC_CLASSES, _background, _shape_colour

__all__ = [
    "VideoSpec",
    "MovingShape",
    "GroundTruthObject",
    "DEFAULT_VIDEOS",
    "plan_video",
    "render_video",
    "write_synthetic_videos",
    "write_mot_ground_truth",
]

# Bump when the rendering changes (written into videos.json).
VIDEO_GENERATOR_VERSION = 1


@dataclass(frozen=True)
class VideoSpec:
    """
    Everything a video depends on.

    Attributes:
        seed (int): the video is drawn from ``np.random.default_rng([seed, 7])``.
        crossing (bool): objects cross and hide each other ("crossing"), or keep to their own
            lanes ("lanes").
        num_frames (int): frames of the video.
        image_size (int): side of the square frames (the main job's images: 160).
        min_visible_area (int): an object with fewer visible pixels is not in that frame's
            ground truth.
        fps (float): frames per second written into the mp4 file.
    """

    seed: int
    crossing: bool = False
    num_frames: int = 60
    image_size: int = 160
    min_visible_area: int = 40
    fps: float = 30.0


# The measured set: 10 videos of 60 frames, the first five "lanes", the last five "crossing".
DEFAULT_VIDEOS = tuple(VideoSpec(seed=i, crossing=i >= 5) for i in range(10))


@dataclass(frozen=True)
class MovingShape:
    """
    One object of a video: its identity, look and motion. Positions are in pixels of the frame,
    ``t`` in frames from the video's start.

    Attributes:
        track_id (int): the object's identity, from 1, also its drawing order (a larger id is
            drawn later, in front).
        class_id (int): index into :data:`~yolact_d2.data.synthetic.SYNTHETIC_CLASSES`.
        colour (tuple[float, float, float]): RGB.
        radius (float): outer radius in pixels.
        start (tuple[float, float]): (x, y) centre at ``t = 0``.
        velocity (tuple[float, float]): pixels per frame at ``t = 0``.
        acceleration (tuple[float, float]): pixels per frame squared.
        angle (float): rotation at ``t = 0`` (radians).
        spin (float): rotation per frame (radians).
    """

    track_id: int
    class_id: int
    colour: Tuple[float, float, float]
    radius: float
    start: Tuple[float, float]
    velocity: Tuple[float, float]
    acceleration: Tuple[float, float]
    angle: float
    spin: float

    def centre(self, t: float) -> np.ndarray:
        """(2,) float (x, y) centre at frame ``t``."""
        p, v, a = (
            np.asarray(x, np.float64) for x in (self.start, self.velocity, self.acceleration)
        )
        return p + v * t + 0.5 * a * t * t

    def mask(self, t: float, image_shape: Tuple[int, int]) -> np.ndarray:
        """(H, W) bool mask of the whole shape at frame ``t`` (clipped by the frame)."""
        return draw_shape(
            SYNTHETIC_CLASSES[self.class_id],
            self.centre(t),
            self.radius,
            self.angle + self.spin * t,
            image_shape,
        )


@dataclass
class GroundTruthObject:
    """
    One visible object in one frame.

    Attributes:
        track_id (int): the object's identity.
        class_id (int): index into ``SYNTHETIC_CLASSES``.
        mask (ndarray): (H, W) bool visible pixels.
        visibility (float): visible pixels over the pixels the object would cover in the frame
            if nothing hid it.
    """

    track_id: int
    class_id: int
    mask: np.ndarray
    visibility: float

    @property
    def box(self) -> Tuple[int, int, int, int]:
        """Tight (x, y, w, h) box of the visible pixels."""
        ys, xs = np.nonzero(self.mask)
        x0, y0 = int(xs.min()), int(ys.min())
        return x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0


def draw_shape(
    shape: str,
    centre: np.ndarray,
    radius: float,
    angle: float,
    image_shape: Tuple[int, int],
) -> np.ndarray:
    """
    Rasterises one shape of :data:`~yolact_d2.data.synthetic.SYNTHETIC_CLASSES` as the image
    dataset draws it (OpenCV, sub-pixel vertices), at a given place and rotation.

    Args:
        shape (str): a class name.
        centre (ndarray): (2,) (x, y) in pixels; may lie outside the frame.
        radius (float): outer radius in pixels.
        angle (float): rotation of the first vertex (radians).
        image_shape (tuple[int, int]): (H, W).

    Returns:
        ndarray: (H, W) bool mask.
    """
    shift = 4
    scale = 2**shift
    mask = np.zeros(image_shape, np.uint8)
    radii = _SHAPE_RADII[shape]
    if radii is None:
        fixed = tuple(int(v) for v in np.rint(np.asarray(centre) * scale))
        cv2.circle(mask, fixed, int(radius * scale), 1, -1, cv2.LINE_8, shift)
    else:
        turns = angle + 2 * np.pi * np.arange(len(radii)) / len(radii)
        offsets = np.stack([np.cos(turns), np.sin(turns)], axis=1) * np.asarray(radii)[:, None]
        vertices = np.asarray(centre)[None] + radius * offsets
        points = np.rint(vertices * scale).astype(np.int32)
        cv2.fillPoly(mask, [points], 1, cv2.LINE_8, shift)
    return mask.astype(bool)


def _lane_objects(rng, spec: VideoSpec) -> List[Dict]:
    """Motions of the "lanes" kind: per lane, objects one after another, never meeting."""
    size, frames = spec.image_size, spec.num_frames
    lanes = 3
    spacing = size / lanes
    objects = []
    for lane in range(lanes):
        y = spacing * (lane + 0.5)
        direction = 1.0 if rng.random() < 0.5 else -1.0
        radius_cap = spacing / 2 - 4  # an object never reaches the next lane
        t_enter = float(rng.uniform(-20, 0))  # the first one is in the frame at t = 0
        while t_enter < frames - 10:
            radius = float(rng.uniform(0.08 * size, min(0.14 * size, radius_cap)))
            speed = float(rng.uniform(1.5, 3.5))
            accel = float(rng.uniform(-0.01, 0.02))  # never turns back
            # Enter at t_enter through the edge behind the motion.
            x_enter = -radius if direction > 0 else size + radius
            start_x = x_enter - direction * (speed * t_enter - 0.5 * accel * t_enter**2)
            velocity_at_0 = speed - accel * t_enter
            objects.append(
                {
                    "radius": radius,
                    "start": (start_x, y),
                    "velocity": (direction * velocity_at_0, 0.0),
                    "acceleration": (direction * accel, 0.0),
                }
            )
            t_enter += float(rng.uniform(25, 45))  # the next one enters well behind it
    return objects


def _crossing_objects(rng, spec: VideoSpec) -> List[Dict]:
    """Motions of the "crossing" kind: straight paths in all directions through the frame."""
    size, frames = spec.image_size, spec.num_frames
    objects = []
    for _ in range(int(rng.integers(3, 6))):
        radius = float(rng.uniform(0.08 * size, 0.17 * size))
        # A path through a point of the frame's middle, reached at a random time.
        through = rng.uniform(0.3, 0.7, size=2) * size
        heading = rng.uniform(0, 2 * np.pi)
        speed = float(rng.uniform(1.0, 3.0))
        velocity = speed * np.array([np.cos(heading), np.sin(heading)])
        accel = rng.uniform(-0.015, 0.015, size=2)
        t_through = float(rng.uniform(0.2, 0.8) * frames)
        start = through - velocity * t_through + 0.5 * accel * t_through**2
        objects.append(
            {
                "radius": radius,
                "start": tuple(start),
                "velocity": tuple(velocity - accel * t_through),
                "acceleration": tuple(accel),
            }
        )
    return objects


def plan_video(spec: VideoSpec) -> Tuple[np.ndarray, List[MovingShape]]:
    """
    Draws a video's background and objects. "lanes" videos are redrawn until no two objects
    ever touch, "crossing" videos until some object is hidden completely for 1 to 8 frames while
    inside the frame, and both until every object is visible in at least 5 frames.

    Returns:
        tuple[ndarray, list[MovingShape]]: the (H, W, 3) float32 RGB background (before
        per-frame noise) and the objects, in drawing order.
    """
    rng = np.random.default_rng([spec.seed, 7])
    shape = (spec.image_size, spec.image_size)
    for _ in range(200):
        background = _background(rng, spec.image_size, shape)
        motions = _crossing_objects(rng, spec) if spec.crossing else _lane_objects(rng, spec)
        objects = []
        for track_id, motion in enumerate(motions, start=1):
            class_id = int(rng.integers(len(SYNTHETIC_CLASSES)))
            colour = _shape_colour(rng, background.reshape(-1, 3).mean(axis=0))
            objects.append(
                MovingShape(
                    track_id=track_id,
                    class_id=class_id,
                    colour=tuple(float(c) for c in colour),
                    angle=float(rng.uniform(0, 2 * np.pi)),
                    spin=float(rng.uniform(-0.03, 0.03)),
                    **motion,
                )
            )
        if _acceptable(objects, spec):
            return background, objects
    raise RuntimeError(f"no acceptable video found for {spec}")


def _acceptable(objects: List[MovingShape], spec: VideoSpec) -> bool:
    shape = (spec.image_size, spec.image_size)
    visible_frames = {o.track_id: 0 for o in objects}
    hidden_runs: Dict[int, int] = {}
    hidden_ok = False
    for t in range(spec.num_frames):
        masks = [o.mask(t, shape) for o in objects]
        if not spec.crossing:
            present = [m for m in masks if m.any()]
            total = np.sum(present, axis=0) if present else np.zeros(shape)
            if (total > 1).any():
                return False
        for obj, visible, whole in zip(objects, _visible_masks(masks), masks):
            area = int(visible.sum())
            if area >= spec.min_visible_area:
                visible_frames[obj.track_id] += 1
                run = hidden_runs.pop(obj.track_id, 0)
                hidden_ok |= 1 <= run <= 8
            elif whole.sum() >= 2 * spec.min_visible_area and visible_frames[obj.track_id]:
                hidden_runs[obj.track_id] = hidden_runs.get(obj.track_id, 0) + 1
            else:  # outside the frame: not an occlusion
                hidden_runs.pop(obj.track_id, None)
    enough = all(n >= 5 for n in visible_frames.values())
    return enough and (hidden_ok or not spec.crossing)


def _visible_masks(masks: List[np.ndarray]) -> List[np.ndarray]:
    """What remains of each mask under the masks that follow it (drawn later, in front)."""
    visible = [m.copy() for m in masks]
    covered = np.zeros_like(masks[0]) if masks else None
    for i in range(len(masks) - 1, -1, -1):
        visible[i] &= ~covered
        covered |= masks[i]
    return visible


def render_video(spec: VideoSpec) -> Iterator[Tuple[np.ndarray, List[GroundTruthObject]]]:
    """
    Renders a video frame by frame.

    Args:
        spec (VideoSpec): what to render.

    Yields:
        (frame, objects): the (H, W, 3) uint8 BGR frame (as OpenCV reads videos) and its
        ground truth, the objects with at least ``min_visible_area`` visible pixels.
    """
    background, objects = plan_video(spec)
    shape = (spec.image_size, spec.image_size)
    noise = np.random.default_rng([spec.seed, 8])
    for t in range(spec.num_frames):
        image = background + noise.normal(0, 3, size=background.shape)
        masks = [o.mask(t, shape) for o in objects]
        for obj, mask in zip(objects, masks):
            image[mask] = np.asarray(obj.colour) + noise.normal(0, 6, size=(int(mask.sum()), 3))
        truth = []
        for obj, visible, whole in zip(objects, _visible_masks(masks), masks):
            area = int(visible.sum())
            if area >= spec.min_visible_area:
                visibility = area / max(int(whole.sum()), 1)
                truth.append(GroundTruthObject(obj.track_id, obj.class_id, visible, visibility))
        rgb = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        yield np.ascontiguousarray(rgb[:, :, ::-1]), truth


def ground_truth_results(frame: int, objects: List[GroundTruthObject]) -> List[Dict]:
    """
    A frame's ground truth in the per-frame COCO-style format of ``tools/demo.py --track
    --output-json``: "frame", "track_id", "image_id" (the frame), "category_id" (the
    synthetic datasets' category id, class index + 1), "bbox" (XYWH), "score" 1,
    "segmentation" (compressed RLE), plus "visibility".
    """
    records = []
    for obj in objects:
        rle = mask_util.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
        records.append(
            {
                "frame": frame,
                "track_id": obj.track_id,
                "image_id": frame,
                "category_id": obj.class_id + 1,
                "bbox": [float(v) for v in obj.box],
                "score": 1.0,
                "segmentation": {"size": list(obj.mask.shape), "counts": rle["counts"].decode()},
                "visibility": round(float(obj.visibility), 4),
            }
        )
    return records


def write_mot_ground_truth(path: str, frames: List[List[GroundTruthObject]]) -> None:
    """
    Writes MOTChallenge ground truth: one line per visible object,
    ``frame,id,x,y,w,h,1,class,visibility`` with frames from 1 and the class as the dataset's
    category id (``class_id + 1``).
    """
    with open(path, "w") as f:
        for frame, objects in enumerate(frames, start=1):
            for obj in objects:
                x, y, w, h = obj.box
                f.write(
                    f"{frame},{obj.track_id},{x},{y},{w},{h},1,{obj.class_id + 1},"
                    f"{obj.visibility:.4f}\n"
                )


def write_synthetic_videos(directory: str, specs=DEFAULT_VIDEOS) -> List[Dict]:
    """
    Renders ``specs`` into ``directory`` (created): ``video_NN.mp4``, ``video_NN.gt.txt``
    (MOTChallenge), ``video_NN.gt.json`` (per-frame COCO-style with masks) and ``videos.json``
    (one entry per video: "name", "video", "gt_mot", "gt_json", "kind", and the spec), NN the
    spec's seed (distinct seeds, then).

    Returns:
        list[dict]: the entries of ``videos.json``.
    """
    os.makedirs(directory, exist_ok=True)
    entries = []
    if len({spec.seed for spec in specs}) != len(specs):
        raise ValueError("the videos' seeds must differ (they name the files)")
    for spec in specs:
        name = f"video_{spec.seed:02d}"
        video_path = os.path.join(directory, name + ".mp4")
        size = (spec.image_size, spec.image_size)
        writer = cv2.VideoWriter(video_path, cv2.VideoWriter_fourcc(*"mp4v"), spec.fps, size)
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write an mp4 video at {video_path!r}")
        frames, records = [], []
        try:
            for t, (bgr, truth) in enumerate(render_video(spec)):
                writer.write(bgr)
                frames.append(truth)
                records += ground_truth_results(t, truth)
        finally:
            writer.release()
        write_mot_ground_truth(os.path.join(directory, name + ".gt.txt"), frames)
        with open(os.path.join(directory, name + ".gt.json"), "w") as f:
            json.dump(records, f)
        entries.append(
            {
                "name": name,
                "video": name + ".mp4",
                "gt_mot": name + ".gt.txt",
                "gt_json": name + ".gt.json",
                "kind": "crossing" if spec.crossing else "lanes",
                "spec": asdict(spec),
            }
        )
    index_data = {
        "generator": __name__,
        "version": VIDEO_GENERATOR_VERSION,
        "classes": list(SYNTHETIC_CLASSES),
        "videos": entries,
    }
    with open(os.path.join(directory, "videos.json"), "w") as f:
        json.dump(index_data, f, indent=1)
    return entries
