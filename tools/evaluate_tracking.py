#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Measures tracking on the synthetic videos with known identities (tools/synthetic_video.py): a
model predicts every frame once, then each tracker runs on the same predictions, and motmetrics
scores the tracks against the ground truth (MOTA, IDF1, ID switches; boxes and masks matched at
IoU 0.5), separately for the "lanes" and the "crossing" videos. "none" is the baseline without
a tracker: the detections shown by the demo (score >= MODEL.YOLACT.TEST.DISPLAY_SCORE_THRESH)
numbered by rank in each frame. Also timed: decoding, the model and each tracker, per frame.

Example (the table of docs/GETTING_STARTED.md)::

    python tools/synthetic_video.py --output datasets/synthetic_video
    python tools/evaluate_tracking.py --videos datasets/synthetic_video \\
        --config-file configs/demo/yolact_R_18_synthetic.yaml \\
        MODEL.WEIGHTS output/demo_synthetic/model_final.pth

Config overrides (KEY VALUE ...) follow the options, bare or after --opts.
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import json
import logging
import os
import sys
import time

import cv2
import torch

from detectron2.utils.logger import setup_logger

from yolact_d2.checkpoint.checkpointer import WeightsError
from yolact_d2.engine import YolactPredictor
from yolact_d2.engine.cli import ToolInputError, load_config, tool_parser
from yolact_d2.engine.tracking import TRACKERS, InstanceTracker, track_results, video_frames
from yolact_d2.evaluation.tracking import summarize_tracking, tracking_accumulator
from yolact_d2.utils.file_io import atomic_open

BASELINE = "none"


def get_parser():
    parser = tool_parser(__doc__)
    parser.add_argument(
        "--videos",
        default=os.path.join("datasets", "synthetic_video"),
        metavar="DIR",
        help="written by tools/synthetic_video.py (its videos.json)",
    )
    parser.add_argument(
        "--trackers",
        nargs="+",
        default=[BASELINE] + list(TRACKERS),
        choices=[BASELINE] + list(TRACKERS),
        help="what to compare (default: all)",
    )
    parser.add_argument("--output", metavar="FILE", help="also write every number as json")
    return parser


def baseline_instances(instances, threshold: float):
    """No tracker: the shown detections, their rank in the frame as id (1 = best score)."""
    shown = instances[instances.scores >= threshold]
    shown = shown[torch.argsort(shown.scores, descending=True)]
    shown.track_ids = torch.arange(1, len(shown) + 1)
    return shown


def predict_video(predictor, path: str):
    """Every frame's predictions (on CPU) and the seconds spent decoding and predicting."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise ToolInputError(f"cannot open video {path!r}")
    predictions, decode, model = [], 0.0, 0.0
    frames = video_frames(capture)
    try:
        while True:
            tick = time.perf_counter()
            frame = next(frames, None)
            decode += time.perf_counter() - tick
            if frame is None:
                break
            tick = time.perf_counter()
            predictions.append(predictor(frame)["instances"].to("cpu"))
            model += time.perf_counter() - tick
    finally:
        capture.release()
    return predictions, decode, model


def evaluate(cfg, videos_dir: str, trackers, logger):
    """
    Returns:
        dict: "videos" (per video and tracker: metrics for boxes and masks, tracker seconds),
        "summary" (per kind and tracker), "timing" (ms per frame).
    """
    index_path = os.path.join(videos_dir, "videos.json")
    if not os.path.isfile(index_path):
        raise ToolInputError(
            f"{index_path!r} does not exist: write the videos first "
            f"(python tools/synthetic_video.py --output {videos_dir})"
        )
    with open(index_path) as f:
        entries = json.load(f)["videos"]
    predictor = YolactPredictor(cfg)
    threshold = cfg.MODEL.YOLACT.TEST.DISPLAY_SCORE_THRESH
    accumulators = {(t, m): {} for t in trackers for m in ("boxes", "masks")}
    seconds = {t: 0.0 for t in trackers}
    decode_seconds = model_seconds = 0.0
    frames_total = 0
    kinds = {}
    for entry in entries:
        name = entry["name"]
        kinds[name] = entry["kind"]
        with open(os.path.join(videos_dir, entry["gt_json"])) as f:
            truth = json.load(f)
        predictions, decode, model = predict_video(
            predictor, os.path.join(videos_dir, entry["video"])
        )
        decode_seconds, model_seconds = decode_seconds + decode, model_seconds + model
        frames_total += len(predictions)
        fps = entry["spec"]["fps"]
        for tracker_name in trackers:
            if tracker_name == BASELINE:
                tick = time.perf_counter()
                shown = [baseline_instances(inst, threshold) for inst in predictions]
                seconds[tracker_name] += time.perf_counter() - tick
                results = [r for t, inst in enumerate(shown) for r in track_results(inst, t)]
            else:
                tracker = InstanceTracker(tracker_name, frame_rate=fps)
                results = []
                for t, instances in enumerate(predictions):
                    results += track_results(tracker(instances), t)
                seconds[tracker_name] += tracker.seconds
            for matching in ("boxes", "masks"):
                accumulators[tracker_name, matching][name] = tracking_accumulator(
                    truth, results, len(predictions), masks=matching == "masks"
                )
        logger.info(f"{name} ({entry['kind']}): {len(predictions)} frames")
    videos, summary = {}, {}
    for (tracker_name, matching), per_video in accumulators.items():
        for kind in ("lanes", "crossing", "all"):
            chosen = {n: a for n, a in per_video.items() if kind in ("all", kinds[n])}
            if not chosen:
                continue
            metrics = summarize_tracking(chosen)
            overall = metrics.pop("OVERALL")
            overall["switches_per_video"] = overall["num_switches"] / len(chosen)
            overall["videos"] = len(chosen)
            summary.setdefault(kind, {}).setdefault(tracker_name, {})[matching] = overall
            if kind == "all":
                for video, values in metrics.items():
                    videos.setdefault(video, {}).setdefault(tracker_name, {})[matching] = values
    timing = {
        "frames": frames_total,
        "decode_ms": 1000 * decode_seconds / frames_total,
        "model_ms": 1000 * model_seconds / frames_total,
        "tracker_ms": {t: 1000 * s / frames_total for t, s in seconds.items()},
    }
    return {"videos": videos, "summary": summary, "timing": timing}


def markdown_table(report) -> str:
    """The docs' table: per kind of video and tracker, box and mask metrics and the time."""
    lines = [
        "| videos | tracker | IDF1 | MOTA | ID switches / video | IDF1 (masks) | MOTA (masks) "
        "| tracker ms / frame |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for kind, per_tracker in report["summary"].items():
        for tracker_name, by_matching in per_tracker.items():
            boxes, masks = by_matching["boxes"], by_matching["masks"]
            ms = report["timing"]["tracker_ms"][tracker_name]
            lines.append(
                f"| {kind} ({boxes['videos']}) | {tracker_name} | {boxes['idf1']:.3f} "
                f"| {boxes['mota']:.3f} | {boxes['switches_per_video']:.1f} "
                f"| {masks['idf1']:.3f} | {masks['mota']:.3f} | {ms:.2f} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logger = setup_logger(name="yolact_d2")
    logging.getLogger("fvcore").setLevel(logging.WARNING)
    try:
        cfg = load_config(args.config_file, args.opts)
        cfg.freeze()
        report = evaluate(cfg, args.videos, args.trackers, logger)
    except (ToolInputError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    timing = report["timing"]
    print(markdown_table(report))
    print(
        f"\n{timing['frames']} frames: decode {timing['decode_ms']:.2f} ms, model "
        f"{timing['model_ms']:.2f} ms per frame; tracker ms per frame: "
        + ", ".join(f"{t} {ms:.2f}" for t, ms in timing["tracker_ms"].items())
    )
    if args.output:
        with atomic_open(args.output, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
