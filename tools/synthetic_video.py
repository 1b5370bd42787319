#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Writes the synthetic videos with known identities that the tracking table of
docs/GETTING_STARTED.md is measured on: the main job's shapes moving (constant velocity plus a
small acceleration), entering and leaving the frame; videos 00-04 keep every object in its own
lane, videos 05-09 make them cross and hide each other for a few frames.

Per video NN: video_NN.mp4 (160 x 160, 30 frames/s), video_NN.gt.txt (MOTChallenge ground
truth: frame,id,x,y,w,h,1,class,visibility) and video_NN.gt.json (per frame COCO-style with
masks, "frame" and "track_id": the format of tools/demo.py --track --output-json), plus
videos.json (the list). Nothing is random beyond the seeds; running it again rewrites the same
files.

Example::

    python tools/synthetic_video.py --output datasets/synthetic_video
    python tools/synthetic_video.py --output /tmp/short --videos 2 --frames 20
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import argparse
import os
import sys

from yolact_d2.data.synthetic_video import DEFAULT_VIDEOS, VideoSpec, write_synthetic_videos


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 3)[3],
    )
    parser.add_argument(
        "--output",
        default=os.path.join("datasets", "synthetic_video"),
        metavar="DIR",
        help="where the videos and their ground truth go (created)",
    )
    parser.add_argument(
        "--videos",
        type=int,
        default=len(DEFAULT_VIDEOS),
        help="the first N videos of the set (the first half lanes, the second crossing)",
    )
    parser.add_argument("--frames", type=int, default=60, help="frames per video")
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    count = max(1, min(args.videos, len(DEFAULT_VIDEOS)))
    if args.frames < 10:
        print("error: --frames must be at least 10", file=sys.stderr)
        return 2
    # The first `count` of the set, half of each kind when fewer are asked for.
    lanes = [s for s in DEFAULT_VIDEOS if not s.crossing]
    crossing = [s for s in DEFAULT_VIDEOS if s.crossing]
    chosen = lanes[: (count + 1) // 2] + crossing[: count // 2]
    specs = [VideoSpec(seed=s.seed, crossing=s.crossing, num_frames=args.frames) for s in chosen]
    entries = write_synthetic_videos(args.output, specs)
    kinds = ", ".join(f"{e['name']} ({e['kind']})" for e in entries)
    print(f"{len(entries)} videos of {args.frames} frames in {args.output}: {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
