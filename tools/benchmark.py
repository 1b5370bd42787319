#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Side-by-side inference benchmark of YOLACT and Detectron2 configs on the same real images.

Example: YOLACT-550 R50 against Mask R-CNN R50-FPN 1x, both as configured and with the
"full_workload" preset (random weights leave Mask R-CNN's ROI heads almost idle; the preset
gives it a trained model's 1000 proposals and 100 detections), in fp32, bf16 and YOLACT's fast
CPU path, and YOLACT exported to ONNX on onnxruntime and OpenVINO, on 2 threads
(``--runtime original --original-repo DIR`` adds the original implementation on the same
weights)::

    python tools/benchmark.py --configs yolact_R_50_FPN_550.yaml \\
        COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml \\
        COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml::full_workload \\
        --precision fp32 bf16 fast --runtime pytorch onnxruntime openvino --threads 2 \\
        --output output/benchmark

Prints a Markdown table (and YOLACT's stage breakdown), writes ``results.csv``,
``results.md`` and ``speed_vs_ap.png`` to ``--output``.
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import argparse
import json
import os

import torch

from detectron2.utils.logger import setup_logger

from yolact_d2.benchmark import (
    MEMORY_COLUMNS,
    PRECISIONS,
    RUNTIMES,
    STAGE_COLUMNS,
    SUMMARY_COLUMNS,
    BenchmarkSettings,
    add_relative_speed,
    benchmark_config,
    check_original_repo,
    config_label,
    cpu_load,
    dataset_image_files,
    dataset_objects,
    default_image_dir,
    image_files,
    is_yolact,
    load_config_spec,
    load_images,
    markdown_table,
    memory_by_image_size,
    plot_speed_vs_ap,
    resize_images,
    write_csv,
)
from yolact_d2.engine.cli import tool_parser
from yolact_d2.utils.cpu import cpu_flags_summary

DEFAULT_CONFIGS = [
    "yolact_R_50_FPN_550.yaml",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml::full_workload",
]


def get_parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__, config_file=False)
    parser.add_argument(
        "--configs",
        nargs="+",
        default=DEFAULT_CONFIGS,
        metavar="CONFIG",
        help="config files, names under configs/ or Detectron2 model-zoo names, each optionally "
        "followed by its own overrides as ::KEY=VALUE,KEY=VALUE",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", metavar="DIR", help="image folder (default: tiny_coco val2017)")
    source.add_argument("--dataset", metavar="NAME", help="registered dataset to take images from")
    parser.add_argument("--num-images", type=int, default=50, help="images timed per run")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="resize every timed image to H x W first (e.g. 720 1280: video frames)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["fp32"],
        choices=PRECISIONS,
        help="fp32 (YOLACT: the exact path); bf16 (autocast; YOLACT: fast CPU path in bf16); "
        "fp32-fast (YOLACT's fast CPU path in fp32); fast (YOLACT's fast CPU path, dtype "
        "picked for this CPU); int8 (YOLACT quantised with NNCF, on --runtime openvino)",
    )
    parser.add_argument(
        "--runtime",
        nargs="+",
        default=["pytorch"],
        choices=RUNTIMES,
        help="pytorch: the PyTorch model in each --precision; onnxruntime, openvino: YOLACT "
        "exported to ONNX (whole pipeline, same weights) and run there in fp32 (OpenVINO also "
        "in its own bf16 when --precision has bf16, int8 when it has int8); "
        "onnxruntime-network, openvino-network: the same with the network graph, "
        "post-processed in PyTorch (tools/export_model.py --graph network)",
    )
    parser.add_argument(
        "--threads",
        nargs="+",
        type=int,
        default=[torch.get_num_threads()],
        help="torch.set_num_threads values to run",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per model call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--eval-weights",
        nargs="+",
        metavar="WEIGHTS",
        help="one checkpoint per config ('none' to skip) to report AP with",
    )
    parser.add_argument(
        "--eval-dataset",
        help="registered dataset for AP (default: each config's DATASETS.TEST[0])",
    )
    parser.add_argument("--eval-images", type=int, help="evaluate AP on the first N images only")
    parser.add_argument(
        "--baseline",
        help="config label the speed-up column is relative to "
        "(default: the first non-YOLACT config)",
    )
    parser.add_argument(
        "--iou-images",
        type=int,
        default=10,
        help="images on which bf16/fast masks are compared with fp32 masks",
    )
    parser.add_argument("--no-stages", action="store_true", help="skip YOLACT's stage timing")
    parser.add_argument(
        "--synthetic-dataset",
        default="tiny_coco_val",
        help="also time YOLACT's post-processing on detector-like outputs around "
        "this dataset's ground truth for the same images ('none' to skip)",
    )
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument(
        "--memory-sizes",
        nargs="+",
        default=[],
        metavar="WxH",
        help="also measure the peak RSS of one YOLACT predictor call (first --precision, first "
        "--threads) on the first image resized to each size, e.g. 640x480 1920x1080",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--calibrate",
        type=int,
        default=0,
        metavar="N",
        help="calibrate YOLACT's random weights on the first N images of tiny_coco_train so "
        "that they detect like a trained model (realistic scores, boxes and masks; 0: as "
        "initialised, almost every prior passes the score pre-filter)",
    )
    parser.add_argument(
        "--calibration-dataset",
        help="training images for the int8 rows' activation ranges (default: each config's "
        "DATASETS.TRAIN[0] for --eval-weights, tiny_coco_train for random weights)",
    )
    parser.add_argument(
        "--int8-calibration-images",
        type=int,
        default=32,
        metavar="N",
        help="images of --calibration-dataset the int8 model is calibrated on",
    )
    parser.add_argument(
        "--original-repo",
        metavar="DIR",
        help="a checkout of the original implementation (github.com/dbolya/yolact) for "
        "'--runtime original'",
    )
    parser.add_argument("--output", default="output/benchmark", help="output folder")
    return parser


def _weights_per_config(args):
    if not args.eval_weights:
        return [None] * len(args.configs)
    if len(args.eval_weights) != len(args.configs):
        raise SystemExit("--eval-weights needs one entry per config ('none' to skip one)")
    return [None if w.lower() == "none" else w for w in args.eval_weights]


def _log_network_inputs(args, image_size, logger):
    """The network input each YOLACT config gives an image of ``image_size``."""
    from yolact_d2.layers.input_size import aspect_preserving_size, padded_input_size

    for config in args.configs:
        cfg = load_config_spec(config, args.opts)
        if not is_yolact(cfg):
            continue
        size = cfg.MODEL.YOLACT.INPUT_SIZE
        shape = (size, size)
        if cfg.MODEL.YOLACT.PRESERVE_ASPECT_RATIO:
            shape = padded_input_size(*aspect_preserving_size(*image_size, size), size)
        logger.info(
            f"{config_label(config)}: {image_size[0]}x{image_size[1]} images -> network input "
            f"{shape[0]}x{shape[1]}"
        )


def _default_baseline(configs):
    others = [c for c in configs if not is_yolact(load_config_spec(c))]
    return config_label(others[0]) if others else None


def main(args) -> list:
    logger = setup_logger(name="yolact_d2")
    load_config_spec(args.configs[0], args.opts)  # registers DATASETS.REGISTER_COCO for --dataset
    os.makedirs(args.output, exist_ok=True)
    if args.dataset:
        files = dataset_image_files(args.dataset, args.num_images)
    else:
        files = image_files(args.images or default_image_dir(), args.num_images)
    images = load_images(files)
    if args.image_size:
        images = resize_images(images, *args.image_size)
        _log_network_inputs(args, images[0].shape[:2], logger)
    if "original" in args.runtime:
        if not args.original_repo:
            raise SystemExit(
                "--runtime original needs --original-repo DIR (a dbolya/yolact checkout)"
            )
        args.original_repo = check_original_repo(args.original_repo)
    calibration = None
    if args.calibrate > 0:
        calibration = load_images(dataset_image_files("tiny_coco_train", args.calibrate))
    logger.info(f"{len(images)} images; load average before: {cpu_load()}")
    objects = None
    if args.synthetic_dataset.lower() != "none" and not args.no_stages:
        objects = dataset_objects(args.synthetic_dataset, files=files)
    weights = _weights_per_config(args)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        settings = BenchmarkSettings(
            warmup=args.warmup,
            batch_size=args.batch_size,
            threads=threads,
            device=args.device,
            seed=args.seed,
            stages=not args.no_stages,
            flops=not args.no_flops,
            iou_images=args.iou_images,
            opts=args.opts,
            output_dir=args.output,
            eval_dataset=args.eval_dataset,
            eval_images=args.eval_images,
            synthetic_objects=objects,
            runtimes=args.runtime,
            image_files=files,
            original_repo=args.original_repo,
            calibration_images=calibration,
            int8_calibration_images=args.int8_calibration_images,
            int8_calibration_dataset=args.calibration_dataset,
        )
        for config, config_weights in zip(args.configs, weights):
            rows += benchmark_config(config, args.precision, images, settings, config_weights)
    add_relative_speed(rows, args.baseline or _default_baseline(args.configs))
    memory_rows = []
    if args.memory_sizes:
        torch.set_num_threads(args.threads[0])
        sizes = [_parse_size(s) for s in args.memory_sizes]
        for config, config_weights in zip(args.configs, weights):
            if is_yolact(load_config_spec(config, args.opts)):
                memory_rows += memory_by_image_size(
                    config, images[0], sizes, settings, args.precision[0], config_weights
                )
    _report(args, rows, logger, memory_rows)
    return rows + memory_rows


def _parse_size(text: str):
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise SystemExit(f"--memory-sizes: {text!r} is not WIDTHxHEIGHT (e.g. 1920x1080)")
    return int(width), int(height)


def _report(args, rows, logger, memory_rows=()) -> None:
    environment = (
        f"torch {torch.__version__}, {cpu_flags_summary()}, load average after: {cpu_load()}"
    )
    summary = markdown_table(rows, SUMMARY_COLUMNS)
    stage_rows = [r for r in rows if "stage_sum_ms" in r]
    stages = markdown_table(stage_rows, STAGE_COLUMNS) if stage_rows else ""
    memory = markdown_table(memory_rows, MEMORY_COLUMNS) if memory_rows else ""
    text = "\n\n".join(t for t in [summary, stages, memory, environment] if t)
    print(text)
    with open(os.path.join(args.output, "results.md"), "w") as f:
        f.write(text + "\n")
    write_csv(rows, os.path.join(args.output, "results.csv"))
    with open(os.path.join(args.output, "command.json"), "w") as f:
        json.dump(vars(args), f, indent=2)
    plot_speed_vs_ap(
        rows,
        os.path.join(args.output, "speed_vs_ap.png"),
        title=f"{rows[0]['images'] if rows else 0} images, {environment}",
    )
    logger.info(f"wrote results.md, results.csv and speed_vs_ap.png to {args.output}")


if __name__ == "__main__":
    main(get_parser().parse_args())
