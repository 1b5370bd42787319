#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
r"""
Quantise a trained YOLACT to int8 (post-training, OpenVINO NNCF) for CPU inference.

    python tools/quantize.py --config-file configs/yolact_R_50_FPN_550.yaml \
        --output export/ --calibration-images 32 MODEL.WEIGHTS model_final.pth

exports the model to export/model.onnx (as tools/export_model.py does, --graph pipeline or
network; --onnx FILE reuses an existing export), calibrates int8 activation ranges on the first
N images of the config's first training dataset (--calibration-dataset NAME to choose another),
writes export/model_int8.xml (+ .bin, an OpenVINO IR with the export's metadata) and compares it
with the fp32 PyTorch model on --verify-images images of the first test dataset. Run it with

    yolact_d2.deploy.ExportedPredictor("export/model_int8.xml", runtime="openvino")

or time it with tools/benchmark.py --precision int8 (which quantises the same way).
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import logging
import os

from detectron2.utils.logger import setup_logger

from yolact_d2.benchmark import MaskAgreement, dataset_image_files, load_images
from yolact_d2.deploy import (
    GRAPHS,
    ExportedPredictor,
    build_export_model,
    export_model,
    quantize_int8,
    read_metadata,
)
from yolact_d2.deploy.verify import pytorch_instances
from yolact_d2.engine.cli import exit_on_input_error, fail, tool_config_or_exit, tool_parser


def parse_args(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--output", required=True, metavar="DIR", help="directory to write to")
    parser.add_argument("--onnx", metavar="FILE", help="an existing export of this model")
    parser.add_argument(
        "--graph",
        choices=sorted(GRAPHS),
        help="the graph to export and quantise (as tools/export_model.py --graph; default "
        "pipeline): network leaves the post-processing to ExportedPredictor's PyTorch code; "
        "with --onnx, the file must hold this graph",
    )
    parser.add_argument(
        "--calibration-dataset",
        metavar="NAME",
        help="registered dataset to calibrate on (default: the config's DATASETS.TRAIN[0])",
    )
    parser.add_argument("--calibration-images", type=int, default=32, metavar="N")
    parser.add_argument(
        "--verify-images",
        type=int,
        default=10,
        metavar="N",
        help="images of DATASETS.TEST[0] to compare int8 with fp32 on (0: skip)",
    )
    return parser.parse_args(argv)


def _dataset_images(name: str, count: int, what: str):
    try:
        return load_images(dataset_image_files(name, count))
    except KeyError as e:
        fail(f"{what} dataset {name!r} is not registered ({e})")


def main(argv=None):
    args = parse_args(argv)
    cfg = tool_config_or_exit(args.config_file, args.opts, cpu_fallback=False)
    if args.onnx and not os.path.isfile(args.onnx):
        fail(f"--onnx {args.onnx!r} does not exist")
    if args.onnx and args.graph:
        try:
            exported_graph = read_metadata(args.onnx).get("graph", "pipeline")
        except ValueError as e:
            fail(str(e))
        if exported_graph != args.graph:
            fail(f"--onnx {args.onnx!r} holds the {exported_graph} graph, not --graph {args.graph}")
    if args.calibration_images < 1:
        fail("--calibration-images must be at least 1")
    setup_logger(name="yolact_d2")
    logger = logging.getLogger("yolact_d2")
    dataset = args.calibration_dataset or (cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None)
    if not dataset:
        fail("the config has no DATASETS.TRAIN; name one with --calibration-dataset")
    calibration = _dataset_images(dataset, args.calibration_images, "calibration")
    with exit_on_input_error():
        model = build_export_model(cfg)
    onnx_path = args.onnx or export_model(
        cfg, model, "onnx", args.output, None, args.config_file, graph=args.graph or "pipeline"
    )
    path = quantize_int8(onnx_path, calibration, os.path.join(args.output, "model_int8.xml"))
    logger.info(f"wrote {path} ({len(calibration)} calibration images of {dataset})")
    if args.verify_images > 0 and cfg.DATASETS.TEST:
        images = _dataset_images(cfg.DATASETS.TEST[0], args.verify_images, "test")
        int8 = ExportedPredictor(path, runtime="openvino")
        agreement = MaskAgreement()
        for bgr in images:
            agreement.add(pytorch_instances(model, bgr), int8(bgr)["instances"])
        logger.info(
            f"int8 vs fp32 PyTorch on {len(images)} images of {cfg.DATASETS.TEST[0]}: "
            f"{100 * agreement.matched_fraction:.1f}% of detections matched (class, box IoU >= "
            f"0.5), mean mask IoU {agreement.mean_iou:.4f}"
        )
    print(path)


if __name__ == "__main__":
    main()
