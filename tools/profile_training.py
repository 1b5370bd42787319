#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Where a training iteration's time goes: data loading, network forward, loss, backward (with
gradient clipping) and the optimizer step, measured on the real training step of
``YolactTrainer`` (timing hooks only; nothing of the step is re-implemented here).

    python tools/profile_training.py --config-file configs/demo/yolact_R_18_synthetic.yaml \
        --iters 30 --warmup 5 [--top-ops 15] [KEY VALUE ...]

Prints the median milliseconds per phase and per iteration, the CPU flags of the machine and
the thread count; ``--top-ops N`` adds a table of the N operators with the most self CPU time
(from ``torch.profiler``, over the same iterations).
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import statistics
import sys
import time

import torch

from detectron2.utils.events import EventStorage

from yolact_d2.engine import YolactTrainer
from yolact_d2.engine.cli import tool_config_or_exit, tool_parser
from yolact_d2.utils.cpu import cpu_flags_summary


def parse_args(argv):
    parser = tool_parser(__doc__)
    parser.add_argument("--iters", type=int, default=30, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: keep)")
    parser.add_argument("--top-ops", type=int, default=0, help="also print the top N operators")
    return parser.parse_args(argv)


class PhaseTimer:
    """Hooks on the model, its loss and the optimizer that time the phases of each step."""

    def __init__(self, model, optimizer):
        self.marks = {}
        self.records = []
        model.register_forward_pre_hook(lambda *_: self._mark("forward_start"))
        model.register_forward_hook(lambda *_: self._mark("forward_end"))
        model.loss.register_forward_pre_hook(lambda *_: self._mark("loss_start"))
        model.loss.register_forward_hook(lambda *_: self._mark("loss_end"))
        optimizer.register_step_pre_hook(lambda *_: self._mark("step_start"))
        optimizer.register_step_post_hook(lambda *_: self._mark("step_end"))

    def _mark(self, name):
        self.marks[name] = time.perf_counter()

    def run(self, step, record: bool):
        self.marks = {"begin": time.perf_counter()}
        step()
        self._mark("end")
        m = self.marks
        if not record or "step_start" not in m:  # a skipped (non-finite) step is not recorded
            return
        self.records.append(
            {
                "data": m["forward_start"] - m["begin"],
                "network forward": (m["loss_start"] - m["forward_start"])
                + (m["forward_end"] - m["loss_end"]),
                "loss": m["loss_end"] - m["loss_start"],
                "backward + clip": m["step_start"] - m["forward_end"],
                "optimizer step": m["step_end"] - m["step_start"],
                "iteration": m["end"] - m["begin"],
            }
        )

    def medians_ms(self):
        return {k: 1000 * statistics.median(r[k] for r in self.records) for k in self.records[0]}


def main(argv):
    args = parse_args(argv)
    opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"] + list(args.opts)
    cfg = tool_config_or_exit(args.config_file, opts)
    cfg.freeze()
    if args.threads:
        torch.set_num_threads(args.threads)

    trainer = YolactTrainer(cfg)
    step_trainer = trainer._trainer
    timer = PhaseTimer(step_trainer.model, step_trainer.optimizer)
    profiler = None
    with EventStorage(0) as storage:
        for i in range(args.warmup + args.iters):
            storage.iter = step_trainer.iter = i
            if i == args.warmup and args.top_ops:
                profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                profiler.__enter__()
            timer.run(step_trainer.run_step, record=i >= args.warmup)
            storage.step()
    if profiler is not None:
        profiler.__exit__(None, None, None)
    if not timer.records:
        sys.exit("error: every timed step was skipped (non-finite loss)")

    print(f"config: {args.config_file} {' '.join(args.opts)}")
    print(
        f"batch {cfg.SOLVER.IMS_PER_BATCH}, input {cfg.MODEL.YOLACT.INPUT_SIZE}, "
        f"{torch.get_num_threads()} threads, bf16 autocast {cfg.SOLVER.BF16_CPU}, "
        f"{len(timer.records)} timed iterations after {args.warmup} warm-up"
    )
    print(f"CPU: {cpu_flags_summary()}")
    print("| phase | median ms | share |\n|---|---:|---:|")
    medians = timer.medians_ms()
    for phase, ms in medians.items():
        share = "" if phase == "iteration" else f"{100 * ms / medians['iteration']:.1f}%"
        print(f"| {phase} | {ms:.1f} | {share} |")
    if profiler is not None:
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top_ops))


if __name__ == "__main__":
    main(sys.argv[1:])
