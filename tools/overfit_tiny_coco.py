#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Proof on real data: trains YOLACT from scratch on a fixed 8-image subset of tiny_coco_train,
then evaluates on those same images. Prints the loss drop and the AP, writes the loss curve.

    python tools/overfit_tiny_coco.py [--config-file ...] [KEY VALUE ...]
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import os
import time

from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from yolact_d2.data import register_dataset_subset
from yolact_d2.engine.cli import tool_config_or_exit, tool_parser
from yolact_d2.engine.overfit import loss_drop, plot_loss_curve, read_loss_history
from yolact_d2.engine.trainer import YolactTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = tool_parser(__doc__, config_file=False)
    parser.add_argument(
        "--config-file",
        default=os.path.join(ROOT, "configs", "tiny_coco", "yolact_R_50_FPN_overfit8.yaml"),
    )
    parser.add_argument("--num-images", type=int, default=8)
    args = parser.parse_args()

    subset = f"tiny_coco_train_first{args.num_images}"  # first8 is registered by yolact_d2
    register_dataset_subset(subset, "tiny_coco_train", args.num_images)
    setup_logger(name="yolact_d2")
    setup_logger()
    data = ["MODEL.DEVICE", "cpu", "DATASETS.TRAIN", (subset,), "DATASETS.TEST", (subset,)]
    cfg = tool_config_or_exit(args.config_file, data + list(args.opts))
    cfg.freeze()
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED)  # as train_net.py's default_setup
    start = time.perf_counter()
    trainer = YolactTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    minutes = (time.perf_counter() - start) / 60
    results = YolactTrainer.test(cfg, trainer.model)
    history = read_loss_history(os.path.join(cfg.OUTPUT_DIR, "metrics.json"))
    drop = loss_drop(history)
    png = plot_loss_curve(
        history,
        os.path.join(cfg.OUTPUT_DIR, "loss_curve.png"),
        f"YOLACT R50 from scratch, {args.num_images} tiny_coco images",
    )
    segm, bbox = results.get("segm", {}), results.get("bbox", {})
    print(
        f"\ntotal loss {drop['first']:.3f} -> {drop['last']:.3f} "
        f"({100 * drop['drop']:.1f}% lower) in {cfg.SOLVER.MAX_ITER} iterations, {minutes:.1f} min"
    )
    print(f"mask AP {segm.get('AP', float('nan')):.2f}  box AP {bbox.get('AP', float('nan')):.2f}")
    print(f"loss curve: {png}")


if __name__ == "__main__":
    main()
