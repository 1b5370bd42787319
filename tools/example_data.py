#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Writes the inputs the documented commands use: photos from scikit-image (a person, a cat, a cup,
a motorcycle, a rocket) in examples/images/, a 3-second video panning over two of them in
examples/video.mp4, and the own-data walk-throughs' two-class datasets: COCO json in
datasets/my_shapes/ and the same images in Ultralytics YOLO-seg layout in datasets/my_shapes_yolo/
(datasets/README.md). Nothing is downloaded; running it again rewrites the same files.

Example::

    python tools/example_data.py
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import argparse
import os

from yolact_d2.data.examples import (
    write_example_images,
    write_example_video,
    write_shapes_dataset,
    write_shapes_yolo_dataset,
)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument(
        "--examples", default="examples", metavar="DIR", help="images/ and video.mp4 go here"
    )
    parser.add_argument(
        "--shapes",
        default=os.path.join("datasets", "my_shapes"),
        metavar="DIR",
        help="the own-data walk-through's dataset",
    )
    parser.add_argument(
        "--shapes-yolo",
        default=os.path.join("datasets", "my_shapes_yolo"),
        metavar="DIR",
        help="the same dataset in YOLO-seg layout (data.yaml, images/, labels/)",
    )
    return parser


def main(args) -> None:
    images = write_example_images(os.path.join(args.examples, "images"))
    video = write_example_video(os.path.join(args.examples, "video.mp4"))
    jsons = write_shapes_dataset(args.shapes)
    data_yaml = write_shapes_yolo_dataset(args.shapes_yolo)
    print(f"{len(images)} photos in {os.path.join(args.examples, 'images')}")
    print(f"video: {video}")
    print(f"dataset: {args.shapes} ({', '.join(jsons.values())})")
    print(f"YOLO-seg dataset: {args.shapes_yolo} ({data_yaml})")


if __name__ == "__main__":
    main(get_parser().parse_args())
