# Copyright (c) yolact_d2 contributors.
"""The main job (docs/GETTING_STARTED.md): train on the synthetic shapes, evaluate, draw."""

import logging
import numpy as np
import os
import time

import cv2
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from yolact_d2.data.image_io import model_input
from yolact_d2.utils import draw_predictions

__all__ = ["draw_dataset_predictions", "run_synthetic_demo"]

logger = logging.getLogger(__name__)


def draw_dataset_predictions(cfg, model, dataset_name: str, output_dir: str, num_images: int = 8):
    """
    Runs ``model`` on the first images of a dataset and writes one PNG per image plus a grid.

    Args:
        cfg (CfgNode): the config (``INPUT.FORMAT``, ``MODEL.YOLACT.TEST.DISPLAY_SCORE_THRESH``).
        model (nn.Module): a Yolact model.
        dataset_name (str): a registered dataset.
        output_dir (str): where the drawings go.
        num_images (int): how many images to draw.

    Returns:
        list[str]: the written files, the grid last.
    """
    os.makedirs(output_dir, exist_ok=True)
    metadata = MetadataCatalog.get(dataset_name)
    threshold = cfg.MODEL.YOLACT.TEST.DISPLAY_SCORE_THRESH
    was_training = model.training
    model.eval()
    drawings, paths = [], []
    for record in DatasetCatalog.get(dataset_name)[:num_images]:
        bgr = cv2.imread(record["file_name"])
        with torch.no_grad():
            instances = model([model_input(bgr, cfg.INPUT.FORMAT)])
        drawing = draw_predictions(bgr[:, :, ::-1], instances[0]["instances"], metadata, threshold)
        path = os.path.join(
            output_dir, os.path.splitext(os.path.basename(record["file_name"]))[0] + ".png"
        )
        cv2.imwrite(path, drawing[:, :, ::-1])
        drawings.append(drawing)
        paths.append(path)
    model.train(was_training)
    if drawings:
        rows = [np.concatenate(drawings[i : i + 4], axis=1) for i in range(0, len(drawings), 4)]
        width = rows[0].shape[1]
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
        grid = os.path.join(output_dir, "grid.png")
        cv2.imwrite(grid, np.concatenate(rows, axis=0)[:, :, ::-1])
        paths.append(grid)
    return paths


def run_synthetic_demo(cfg):
    """
    Trains ``cfg`` from scratch (seeded with ``cfg.SEED``), evaluates on ``cfg.DATASETS.TEST[0]``
    with COCOEvaluator (the AP tables are printed) and draws predictions on its images.

    Args:
        cfg (CfgNode): a frozen config, e.g. ``configs/demo/yolact_R_18_synthetic.yaml``.

    Returns:
        dict: the evaluation results ("bbox" and "segm" AP tables), the drawings, and timings.
    """
    from .trainer import YolactTrainer

    setup_logger(name="yolact_d2")
    # As train_net.py's default_setup: SEED >= 0 makes the run repeatable, -1 draws a seed.
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED)
    start = time.perf_counter()
    trainer = YolactTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    train_seconds = time.perf_counter() - start
    results = YolactTrainer.test(cfg, trainer.model)
    dataset = cfg.DATASETS.TEST[0]
    drawings = draw_dataset_predictions(
        cfg, trainer.model, dataset, os.path.join(cfg.OUTPUT_DIR, "visualizations")
    )
    return {
        "results": results,
        "drawings": drawings,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - start,
    }
