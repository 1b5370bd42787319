#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Summarises a training run from its Detectron2 ``metrics.json``: the total loss of the first and
last logged iterations and its relative drop, the number of skipped (non-finite) steps, the
median seconds per iteration, and a PNG of the loss curve.

    python tools/loss_curve.py output/scratch_proof/metrics.json --output loss.png [--window 3]
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import argparse
import json
import os
import statistics
import sys

from yolact_d2.engine.overfit import loss_drop, plot_loss_curve, read_loss_history
from yolact_d2.utils.cpu import cpu_flags_summary


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("metrics", help="a metrics.json written by train_net.py")
    parser.add_argument("--output", help="where to write the loss curve (PNG)")
    parser.add_argument("--title", default="", help="title of the plot")
    parser.add_argument("--window", type=int, default=3, help="logged values averaged at each end")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.metrics):
        sys.exit(f"error: {args.metrics} does not exist")

    history = read_loss_history(args.metrics)
    drop = loss_drop(history, args.window)
    with open(args.metrics) as f:
        entries = [json.loads(line) for line in f]
    skipped = max((e.get("skipped_steps", 0) for e in entries), default=0)
    times = [e["time"] for e in entries if "time" in e]
    print(
        f"{len(history)} logged iterations ({history[0]['iteration']}..{history[-1]['iteration']})"
    )
    print(
        f"total loss {drop['first']:.3f} -> {drop['last']:.3f} ({100 * drop['drop']:.1f}% lower; "
        f"means of the first and last {min(args.window, len(history) // 2)} logged values)"
    )
    print(f"non-finite (skipped) steps: {int(skipped)}")
    if times:
        print(f"median {statistics.median(times):.2f} s/iteration  [{cpu_flags_summary()}]")
    if args.output:
        print(f"loss curve: {plot_loss_curve(history, args.output, args.title)}")


if __name__ == "__main__":
    main(sys.argv[1:])
