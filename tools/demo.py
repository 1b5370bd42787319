#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
r"""
Run a trained YOLACT on images, a folder, a video or a camera, and draw or save its predictions.

Examples (inputs from "python tools/example_data.py"; CFG and W: a config and its weights, e.g.
configs/yolact_R_50_FPN_550.yaml and a converted yolact_resnet50_d2.pth):

    # images, globs and folders (recursively): one drawing per image in output/examples/
    python tools/demo.py --config-file CFG --input examples/images "examples/images/c*.jpg" \
        --output output/examples MODEL.WEIGHTS W
    # detections as COCO results (RLE masks; --polygons adds outer contours and holes)
    python tools/demo.py --config-file CFG --input examples/images \
        --output-json output/examples.json MODEL.WEIGHTS W
    # every image of a registered dataset (its image and category ids, for COCOeval)
    python tools/demo.py --config-file CFG --dataset coco_2017_val \
        --output-json output/val.json MODEL.WEIGHTS W
    # a video: drawn into output/video.mp4 (same size and fps), frame rates printed at the end
    python tools/demo.py --config-file CFG --video-input examples/video.mp4 \
        --output output/video.mp4 MODEL.WEIGHTS W
    # a camera (device 0, or a video file standing in for one); Esc or the end stops it
    python tools/demo.py --config-file CFG --webcam 0 MODEL.WEIGHTS W
    # tracking (video or camera): a colour and an id per object, the tracks as json and as a
    # MOTChallenge text file; the tracker's own time per frame is printed at the end
    python tools/demo.py --config-file CFG --video-input examples/video.mp4 --track \
        --output output/tracked.mp4 --output-json output/tracks.json \
        --output-mot output/tracks.txt MODEL.WEIGHTS W

Config overrides (KEY VALUE ...) follow the options, bare or after --opts.

Without --output, drawings are shown in a window (when a display exists). The json holds every
detection the model returns (as evaluation sees them, with the dataset's category ids where its
metadata maps them); --confidence-threshold only chooses what is drawn. With --track, the json
holds the tracked detections only, each with "frame" and "track_id" (docs/GETTING_STARTED.md,
"Tracking objects in a video"). Exit code 1 if some
inputs do not exist or could not be read (they are listed and skipped, the rest is processed),
2 for a missing config, weights file or output directory, or no image at all.
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import json
import logging
import os
import sys

import cv2

from detectron2.utils.logger import setup_logger

from yolact_d2.checkpoint.checkpointer import WeightsError
from yolact_d2.engine import YolactPredictor
from yolact_d2.engine.cli import check_output_directory, load_config, tool_parser
from yolact_d2.engine.inference_demo import (
    Demo,
    DemoInputError,
    dataset_images,
    file_images,
    list_image_files,
    metadata_of,
)
from yolact_d2.engine.tracking import TRACKERS, InstanceTracker, write_mot
from yolact_d2.utils.file_io import atomic_open


def get_parser():
    parser = tool_parser(__doc__)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", nargs="+", help="image files, globs or folders")
    source.add_argument("--dataset", help="a registered dataset's images (and its ids)")
    source.add_argument("--video-input", metavar="FILE", help="a video file")
    source.add_argument(
        "--webcam",
        nargs="?",
        const="0",
        metavar="INDEX",
        help="a camera (device index, default 0; a video file path stands in for one)",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="a folder for image drawings (created), or the video file to write (.mp4)",
    )
    parser.add_argument("--output-json", metavar="FILE", help="write detections (COCO results)")
    parser.add_argument("--polygons", action="store_true", help="add masks as polygons to json")
    parser.add_argument(
        "--track",
        nargs="?",
        const=TRACKERS[0],
        choices=TRACKERS,
        metavar="TRACKER",
        help=f"track objects across the frames of --video-input/--webcam: {', '.join(TRACKERS)} "
        f"(default {TRACKERS[0]})",
    )
    parser.add_argument(
        "--output-mot", metavar="FILE", help="with --track: write the tracks' boxes (MOTChallenge)"
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        help="minimum score drawn (default: MODEL.YOLACT.TEST.DISPLAY_SCORE_THRESH)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    return parser


def _check_arguments(args) -> None:
    if not (args.input or args.dataset or args.video_input or args.webcam is not None):
        raise DemoInputError(
            "nothing to run on: give --input, --dataset, --video-input or --webcam"
        )
    if args.video_input and not os.path.isfile(args.video_input):
        raise DemoInputError(f"video {args.video_input!r} does not exist")
    if args.batch_size < 1:
        raise DemoInputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.output:
        check_output_directory(args.output, "--output")
    if args.output_json:
        check_output_directory(args.output_json, "--output-json")
    if args.track and not (args.video_input or args.webcam is not None):
        raise DemoInputError("--track needs --video-input or --webcam")
    if args.output_mot:
        if not args.track:
            raise DemoInputError("--output-mot needs --track")
        check_output_directory(args.output_mot, "--output-mot")
    needs_window = not args.output and not args.output_json and not args.output_mot
    if needs_window and not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        raise DemoInputError("no --output or --output-json given and no display to show results on")


def setup_cfg(args):
    cfg = load_config(args.config_file, args.opts)
    if args.confidence_threshold is not None:
        cfg.MODEL.YOLACT.TEST.DISPLAY_SCORE_THRESH = args.confidence_threshold
    cfg.freeze()
    return cfg


def run_images(args, demo: Demo, logger) -> None:
    if args.dataset:
        from detectron2.data import DatasetCatalog

        if args.dataset not in DatasetCatalog.list():
            raise DemoInputError(f"dataset {args.dataset!r} is not registered")
        images, total = dataset_images(args.dataset), len(DatasetCatalog.get(args.dataset))
    else:
        missing = []
        files = list_image_files(args.input, missing)
        if not files:
            what = f"input {missing[0]!r} does not exist" if len(missing) == 1 else "no images"
            raise DemoInputError(f"{what} (--input {' '.join(args.input)})")
        for item in missing:
            logger.warning(f"input {item!r} does not exist, skipped")
        demo.failed += missing
        images, total = file_images(files), len(files)
    if args.output:
        os.makedirs(args.output, exist_ok=True)
    written = 0
    for image, instances in demo.run_images(images, total):
        demo.collect(instances, image.image_id, file_name=os.path.basename(image.name))
        if not args.output and args.output_json:
            continue
        drawing = demo.draw(image.bgr, instances)
        if args.output:
            stem = os.path.splitext(os.path.basename(image.name))[0]
            cv2.imwrite(os.path.join(args.output, stem + ".png"), drawing)
            written += 1
        else:
            cv2.imshow("YOLACT", drawing)
            if cv2.waitKey(0) == 27:
                break
    if args.output:
        logger.info(f"{written} drawings written to {args.output}")


def run_video(args, demo: Demo, logger) -> None:
    source = args.video_input
    if source is None:
        source = int(args.webcam) if args.webcam.isdigit() else args.webcam
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise DemoInputError(f"cannot open {'video' if args.video_input else 'camera'} {source!r}")
    writer = None
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    tracker = InstanceTracker(args.track, frame_rate=fps) if args.track else None
    if args.output:
        size = (
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        writer = cv2.VideoWriter(args.output, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not writer.isOpened():
            raise DemoInputError(f"cannot write video {args.output!r} (use a .mp4 name)")
    try:
        show = not args.output and not args.output_json and not args.output_mot
        stats = demo.run_video(capture, writer, show=show, tracker=tracker)
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    logger.info(
        f"{stats.frames} frames: {stats.model_fps:.2f} frames/s model only, "
        f"{stats.end_to_end_fps:.2f} frames/s end to end (decode + predict + draw + encode)"
    )
    if tracker is not None:
        share = stats.tracker_seconds / stats.total_seconds if stats.total_seconds else 0.0
        logger.info(
            f"tracker ({args.track}): {stats.tracker_ms_per_frame:.2f} ms/frame, "
            f"{100 * share:.1f}% of the end-to-end time; "
            f"{len({r['track_id'] for r in demo.results})} tracks"
        )
        if args.output_mot:
            write_mot(args.output_mot, demo.mot)
            logger.info(f"{len(demo.mot)} track boxes written to {args.output_mot}")


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logger = setup_logger(name="yolact_d2")
    logging.getLogger("fvcore").setLevel(logging.WARNING)
    try:
        cfg = setup_cfg(args)
        _check_arguments(args)
        demo = Demo(
            predictor=YolactPredictor(cfg),
            metadata=metadata_of(cfg, args.dataset),
            confidence_threshold=cfg.MODEL.YOLACT.TEST.DISPLAY_SCORE_THRESH,
            polygons=args.polygons,
            batch_size=args.batch_size,
        )
        if args.video_input or args.webcam is not None:
            run_video(args, demo, logger)
        else:
            run_images(args, demo, logger)
    except (DemoInputError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.output_json:
        with atomic_open(args.output_json, "w") as f:
            json.dump(demo.results, f)
        logger.info(f"{len(demo.results)} detections written to {args.output_json}")
    if demo.failed:
        print(f"{len(demo.failed)} input(s) failed: " + ", ".join(demo.failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
