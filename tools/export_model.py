#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
r"""
Export a YOLACT - network, Fast NMS and mask assembly, all of it - as one ONNX model or
torch.export program.

    python tools/export_model.py --config-file configs/yolact_R_50_FPN_550.yaml \
        --format onnx --output export/ MODEL.WEIGHTS model_final.pth

writes export/model.onnx (or model.pt2 with --format pt2). The graph takes one image as
Detectron2 users hold it - (H, W, 3) uint8, any size, channels in the config's INPUT.FORMAT
order (RGB for the YOLACT configs; the file's metadata says) - and returns boxes in image pixels,
scores, classes and soft masks at prototype resolution (YOLACT++: and mask scores). Run it with
yolact_d2.deploy.ExportedPredictor (onnxruntime, OpenVINO or PyTorch) or, without PyTorch, with
tools/onnx_inference.py. After writing, the export is checked against the PyTorch model on the
sample image (--no-verify skips that).

With MODEL.YOLACT.PRESERVE_ASPECT_RATIO True the graph takes images of one size only, that of
the sample image or --image-size H W (e.g. 720 1280 for a 720p camera).

--graph network exports the network alone (resize, normalisation, backbone, FPN, head,
protonet; the priors as a constant output): ExportedPredictor runs the model's own
post-processing after it in PyTorch, which on a trained model's few candidates costs a fraction
of the whole pipeline's fixed-size NMS in a runtime (YOLACT, not YOLACT++).
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import logging
import os

import cv2

from detectron2.utils.logger import setup_logger

from yolact_d2.deploy import FORMATS, GRAPHS, build_export_model, export_model
from yolact_d2.deploy.graph import build_graph
from yolact_d2.deploy.verify import compare_with_pytorch
from yolact_d2.engine.cli import exit_on_input_error, fail, tool_config_or_exit, tool_parser


def parse_args(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--format", choices=sorted(FORMATS), default="onnx")
    parser.add_argument("--output", required=True, metavar="DIR", help="directory to write to")
    parser.add_argument(
        "--sample-image",
        metavar="IMG",
        help="an image to trace with and to verify on (default: scikit-image's astronaut)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="resize the sample image to H x W (the one image size an aspect-ratio-preserving "
        "export takes)",
    )
    parser.add_argument(
        "--graph",
        choices=sorted(GRAPHS),
        default="pipeline",
        help="pipeline: the whole inference in the graph (standard operators; any ONNX "
        "runtime); network: the network alone, post-processed by yolact_d2's "
        "ExportedPredictor in PyTorch (faster on trained models; YOLACT only)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the parity check")
    return parser.parse_args(argv)


def sample_image_bgr(path):
    if path is None:
        from skimage.data import astronaut

        return cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR)
    if not os.path.isfile(path):
        fail(f"sample image {path!r} does not exist")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        fail(f"cannot read sample image {path!r} (not an image OpenCV can decode)")
    return image


def main(argv=None):
    args = parse_args(argv)
    cfg = tool_config_or_exit(args.config_file, args.opts, cpu_fallback=False)
    setup_logger(name="yolact_d2")
    logger = logging.getLogger("yolact_d2")
    bgr = sample_image_bgr(args.sample_image)
    if args.image_size:
        height, width = args.image_size
        if min(height, width) < 2:
            fail(f"--image-size {height} {width}: both sides must be at least 2")
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    image = bgr[:, :, ::-1].copy() if cfg.INPUT.FORMAT == "RGB" else bgr
    with exit_on_input_error():
        model = build_export_model(cfg)
    try:
        build_graph(model, args.graph)  # what this graph cannot hold (YOLACT++ as a network)
    except ValueError as e:
        fail(str(e))
    path = export_model(
        cfg, model, args.format, args.output, image, args.config_file, graph=args.graph
    )
    logger.info(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
    if not args.no_verify:
        runtime = "pytorch" if args.format == "pt2" else "onnxruntime"
        report = compare_with_pytorch(model, path, runtime, [bgr])
        logger.info(f"{runtime} vs PyTorch on the sample image: {report}")
    print(path)


if __name__ == "__main__":
    main()
