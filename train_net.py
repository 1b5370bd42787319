#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
r"""
Train or evaluate YOLACT / YOLACT++ with Detectron2.

Examples:

    # 8 GPUs
    python train_net.py --config-file configs/yolact_R_101_FPN_550.yaml --num-gpus 8
    # CPU, 2 processes (gloo), a few iterations
    python train_net.py --config-file \
        configs/quick_schedules/yolact_R_50_FPN_tiny_coco_instant_test.yaml --num-gpus 2
    # evaluation only
    python train_net.py --config-file configs/yolact_R_101_FPN_550.yaml --eval-only \
        MODEL.WEIGHTS /path/to/model_final.pth

On a machine without CUDA, ``--num-gpus N`` starts N CPU processes (gloo backend) and each uses
``cores // N`` threads; a config asking for ``MODEL.DEVICE cuda`` falls back to CPU.
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import logging
import os
import sys
from datetime import timedelta

import torch

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from yolact_d2.checkpoint.checkpointer import YolactCheckpointer
from yolact_d2.engine import YolactTrainer, apply_yolact_autoscale
from yolact_d2.engine.cli import exit_on_input_error, tool_config_or_exit, tool_parser

logger = logging.getLogger("yolact_d2")


def setup(args):
    """
    Builds the config (Detectron2 defaults + YOLACT keys + file + command-line opts) and does
    Detectron2's default setup (logging, output dir, seeds). ``SOLVER.YOLACT_AUTOSCALE`` is
    applied last, so ``OUTPUT_DIR/config.yaml`` holds the unscaled schedule, as with
    Detectron2's ``REFERENCE_WORLD_SIZE``; the scaled values are logged.
    """
    # The file, the opts, the CPU fallback, DATASETS.REGISTER_COCO and NUM_CLASSES, before
    # OUTPUT_DIR/config.yaml is written.
    cfg = tool_config_or_exit(args.config_file, args.opts)
    cfg.freeze()
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="yolact_d2")
    default_setup(cfg, args)
    return apply_yolact_autoscale(cfg)


def _set_cpu_threads(cfg):
    """Shares the CPU cores of this machine between its processes."""
    if cfg.MODEL.DEVICE != "cpu":
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // comm.get_local_size())
    torch.set_num_threads(threads)
    logger.info(f"Using {threads} CPU threads in each of {comm.get_local_size()} processes.")


def main(args):
    cfg = setup(args)
    _set_cpu_threads(cfg)

    if args.eval_only:
        model = YolactTrainer.build_model(cfg)
        checkpointer = YolactCheckpointer(
            model,
            save_dir=cfg.OUTPUT_DIR,
            allow_mismatch=cfg.MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH,
        )
        with exit_on_input_error():
            checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = YolactTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results

    trainer = YolactTrainer(cfg)
    with exit_on_input_error():
        trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def get_parser():
    """Detectron2's training arguments, and how long processes wait for each other."""
    parser = tool_parser(__doc__, parents=[default_argument_parser()], config_file=False)
    parser.add_argument(
        "--dist-timeout",
        type=float,
        default=DEFAULT_TIMEOUT.total_seconds(),
        metavar="SECONDS",
        help="how long a process waits for the others in a collective before failing "
        f"(default: Detectron2's {DEFAULT_TIMEOUT.total_seconds():.0f} s); a dead process "
        "usually ends the others at once, this bounds the rest",
    )
    return parser


if __name__ == "__main__":
    args = get_parser().parse_args()
    print("Command Line Args:", args)
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            timeout=timedelta(seconds=args.dist_timeout),
        )
    except torch.multiprocessing.ProcessExitedException as e:
        # A worker that ended on bad input (exit code 2) has printed its one error line: end
        # with its code rather than torch's traceback about the worker.
        if e.exit_code is None or e.exit_code <= 0:
            raise
        sys.exit(e.exit_code)
