#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
r"""
Show what a YOLACT's masks are made of (the paper's Figure 5): the k prototypes of an image as a
grid of heat maps and, for its best N detections, the assembled mask sigmoid(P c) beside the
coefficients c that made it.

    python tools/visualize_prototypes.py --config-file configs/demo/yolact_R_18_synthetic.yaml \
        --input datasets/yolact_synthetic/val/images/000003.jpg --top-k 4 \
        MODEL.WEIGHTS output/demo_synthetic/model_final.pth   # writes output/prototype_view.png

From Python: yolact_d2.engine.prototypes.prototype_view(model, bgr_image, top_k) returns the
arrays, render_prototype_view(...) the picture.
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import os
import sys

import cv2

from detectron2.modeling import build_model

from yolact_d2.checkpoint.checkpointer import WeightsError, YolactCheckpointer
from yolact_d2.engine.cli import ToolInputError, check_output_directory, load_config, tool_parser
from yolact_d2.engine.inference_demo import metadata_of
from yolact_d2.engine.prototypes import prototype_view, render_prototype_view


def get_parser():
    parser = tool_parser(__doc__)
    parser.add_argument("--input", required=True, metavar="IMG", help="an image")
    parser.add_argument(
        "--output",
        default="output/prototype_view.png",
        metavar="OUT.png",
        help="the picture to write (default: output/prototype_view.png; output/ is created)",
    )
    parser.add_argument("--top-k", type=int, default=4, help="detections shown (default 4)")
    return parser


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    try:
        cfg = load_config(args.config_file, args.opts)
    except ToolInputError as e:
        return fail(str(e))
    if not os.path.isfile(args.input):
        return fail(f"input {args.input!r} does not exist")
    if args.output == get_parser().get_default("output"):
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
    try:
        check_output_directory(args.output, "--output")
    except ToolInputError as e:
        return fail(str(e))
    bgr = cv2.imread(args.input, cv2.IMREAD_COLOR)
    if bgr is None:
        return fail(f"cannot read image {args.input!r}")
    model = build_model(cfg).eval()
    try:
        YolactCheckpointer(model, allow_mismatch=cfg.MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH).load(
            cfg.MODEL.WEIGHTS
        )
    except WeightsError as e:
        return fail(str(e))
    view = prototype_view(model, bgr, args.top_k)
    names = metadata_of(cfg).get("thing_classes", [])
    picture = render_prototype_view(view, bgr, names)
    cv2.imwrite(args.output, picture[:, :, ::-1])
    print(
        f"{len(view['prototypes'])} prototypes, {len(view['scores'])} detections -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
