#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
r"""
Where the time of an exported YOLACT goes in OpenVINO and onnxruntime: per stage (preprocess,
backbone, FPN, head, protonet, post-processing), per node type, which convolutions ran in int8,
bf16 or f32, the layout conversions (Reorder) the runtime inserted, and the slowest nodes.

    python tools/profile_runtime.py --config-file configs/yolact_R_50_FPN_550.yaml \
        --runs openvino-f32 openvino-int8 onnxruntime-f32 --num-images 5 --threads 2

Without MODEL.WEIGHTS the model's seeded random weights are calibrated to detect like a trained
model (as tools/benchmark.py --calibrate does) on tiny_coco training images; int8 is quantised
(NNCF) on 32 of them. Tables go to stdout and OUTPUT/profile.md. With --requests 1 2, the
OpenVINO runs also report images/s of the graph with one request (LATENCY hint) against two in
flight (THROUGHPUT hint).
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import os

import torch

from detectron2.utils.logger import setup_logger

from yolact_d2.benchmark import dataset_image_files, default_image_dir, image_files, load_images
from yolact_d2.benchmark.calibration import calibrate_detections
from yolact_d2.benchmark.runtime_profile import (
    openvino_images_per_second,
    profile_onnxruntime,
    profile_openvino,
    summarize,
)
from yolact_d2.deploy import build_export_model, export_model, quantize_int8
from yolact_d2.deploy.graph import GRAPHS
from yolact_d2.engine.cli import exit_on_input_error, tool_config_or_exit, tool_parser
from yolact_d2.utils.cpu import cpu_flags_summary

RUNS = ("openvino-f32", "openvino-bf16", "openvino-int8", "onnxruntime-f32")


def get_parser():
    parser = tool_parser(__doc__)
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--num-images", type=int, default=5, help="tiny_coco val images timed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration-images", type=int, default=32, help="for int8")
    parser.add_argument("--output", default="output/profile_runtime", help="output folder")
    parser.add_argument(
        "--graph",
        choices=GRAPHS,
        default="pipeline",
        help="the exported graph profiled: the whole pipeline, or the network alone "
        "(tools/export_model.py --graph network; its post-processing runs in PyTorch, outside "
        "the profile)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="OpenVINO runs: also images/s with N requests in flight (1: LATENCY hint, more: "
        "THROUGHPUT hint), e.g. --requests 1 2",
    )
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="yolact_d2")
    cfg = tool_config_or_exit(args.config_file, ["MODEL.DEVICE", "cpu"] + list(args.opts))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with exit_on_input_error():
        model = build_export_model(cfg)
    rgb = cfg.INPUT.FORMAT == "RGB"
    if not cfg.MODEL.WEIGHTS:
        calibration = load_images(dataset_image_files("tiny_coco_train", 8))
        calibrate_detections(model, [i[:, :, ::-1].copy() if rgb else i for i in calibration])
    os.makedirs(args.output, exist_ok=True)
    bgr = load_images(image_files(default_image_dir(), args.num_images))
    images = [i[:, :, ::-1].copy() if rgb else i for i in bgr]
    onnx_path = export_model(
        cfg, model, "onnx", args.output, images[0], args.config_file, graph=args.graph
    )
    report = [
        f"# {args.config_file} ({args.graph} graph): {len(images)} images, {args.threads} threads"
    ]
    report.append(f"CPU: {cpu_flags_summary()}")
    for run in args.runs:
        runtime, precision = run.split("-")
        if runtime == "onnxruntime":
            nodes = profile_onnxruntime(onnx_path, images, args.threads)
        else:
            path = onnx_path
            if precision == "int8":
                training = load_images(
                    dataset_image_files("tiny_coco_train", args.calibration_images)
                )
                path = quantize_int8(onnx_path, training)
            hint = "bf16" if precision == "bf16" else "f32"
            nodes = profile_openvino(path, onnx_path, images, args.threads, hint)
        report += ["", f"## {run}", "", summarize(nodes)]
        if runtime == "openvino":
            for requests in args.requests:
                rate = openvino_images_per_second(path, images, args.threads, requests, hint)
                report[-1] += f"\n\n{requests} request(s) in flight: {rate:.2f} images/s"
        print("\n".join(report[-3:]), flush=True)
    with open(os.path.join(args.output, "profile.md"), "w") as f:
        f.write("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
