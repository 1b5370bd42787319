# Copyright (c) yolact_d2 contributors.
"""Mask and box AP of a predictor on a registered COCO-format dataset."""

import os
from typing import Dict, Optional

from detectron2.data import build_detection_test_loader
from detectron2.evaluation import inference_on_dataset

from yolact_d2.data import register_dataset_subset
from yolact_d2.evaluation import YolactCOCOEvaluator

from .predictor import BenchmarkPredictor

__all__ = ["dataset_subset", "evaluate_ap"]


def dataset_subset(dataset_name: str, num_images: Optional[int]) -> str:
    """
    Returns:
        str: ``dataset_name`` if ``num_images`` is None, else the name of its first
        ``num_images`` records, registered by :func:`register_dataset_subset` (evaluated against
        those records only).
    """
    if num_images is None:
        return dataset_name
    return register_dataset_subset(f"{dataset_name}_first{num_images}", dataset_name, num_images)


def evaluate_ap(
    predictor: BenchmarkPredictor,
    dataset_name: str,
    output_dir: str,
    num_images: Optional[int] = None,
) -> Dict[str, float]:
    """
    COCO AP with Detectron2's test loader and ``inference_on_dataset`` (YOLACT++ masks ranked
    by their mask scores, see :class:`YolactCOCOEvaluator`).

    Args:
        predictor (BenchmarkPredictor): its model and precision are evaluated.
        dataset_name (str): a registered COCO-format dataset.
        output_dir (str): where the evaluator writes its files.
        num_images (int or None): evaluate on the first ``num_images`` records only.

    Returns:
        dict: "mask_ap" and "box_ap" (NaN if the task was not evaluated).
    """
    name = dataset_subset(dataset_name, num_images)
    cfg = predictor.cfg.clone()
    cfg.DATALOADER.NUM_WORKERS = min(cfg.DATALOADER.NUM_WORKERS, os.cpu_count() or 1)
    loader = build_detection_test_loader(cfg, name)
    evaluator = YolactCOCOEvaluator(name, output_dir=os.path.join(output_dir, name))
    with predictor.autocast():
        results = inference_on_dataset(predictor.model, loader, evaluator)
    nan = float("nan")
    return {
        "mask_ap": results.get("segm", {}).get("AP", nan),
        "box_ap": results.get("bbox", {}).get("AP", nan),
    }
