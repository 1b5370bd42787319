# Copyright (c) yolact_d2 contributors.
"""
Measuring configs side by side: end-to-end ``DefaultPredictor`` latency, throughput, memory,
size, FLOPs, YOLACT's stage breakdown, agreement with fp32 and (optionally) AP.
"""

import gc
import logging
import math
import numpy as np
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from yolact_d2.utils.stages import POSTPROCESS_STAGES, STAGES

from .accuracy import evaluate_ap
from .analysis import count_gflops, count_parameters
from .mask_iou import MaskAgreement
from .predictor import (
    BenchmarkPredictor,
    build_predictor,
    config_label,
    input_description,
    is_yolact,
    load_config,
    supported_precisions,
)
from .runtimes import RUNTIMES, build_runtime_predictor, runtime_precisions
from .stage_breakdown import synthetic_postprocess, timed_stages
from .timing import PeakMemory, latency_stats, synchronize

__all__ = ["RUNTIMES", "BenchmarkSettings", "benchmark_config", "add_relative_speed"]

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkSettings:
    """
    Attributes:
        warmup (int): untimed batches before timing.
        batch_size (int): images per model call (1: ``DefaultPredictor.__call__``).
        threads (int): ``torch.set_num_threads`` (recorded; set by the caller).
        device (str): "cpu" or "cuda".
        seed (int): seed of the random initialisation when no weights are given.
        stages (bool): time YOLACT's stages (a second pass over the images).
        flops (bool): count FLOPs (one traced forward on the first image).
        iou_images (int): images on which non-fp32 masks are compared with fp32 ones.
        opts (list[str]): extra KEY VALUE config pairs for every config.
        output_dir (str): where evaluators write their files.
        eval_dataset (str or None): registered dataset for AP (when weights are given).
        eval_images (int or None): evaluate AP on the first images of ``eval_dataset`` only.
        synthetic_objects (list or None): per image, ground-truth (boxes, classes) to also
            time YOLACT's post-processing on detector-like outputs around them
            (:func:`synthetic_postprocess`).
        runtimes (list[str]): of :data:`RUNTIMES`: "pytorch" (the PyTorch model in each
            precision) and the runtimes YOLACT's exported ONNX model is timed on.
    """

    warmup: int = 3
    batch_size: int = 1
    threads: int = 1
    device: str = "cpu"
    seed: int = 0
    stages: bool = True
    flops: bool = True
    iou_images: int = 10
    opts: List[str] = field(default_factory=list)
    output_dir: str = "output/benchmark"
    eval_dataset: Optional[str] = None
    eval_images: Optional[int] = None
    synthetic_objects: Optional[List] = None
    runtimes: Sequence[str] = ("pytorch",)


def _batches(images: Sequence[np.ndarray], batch_size: int) -> List[Sequence[np.ndarray]]:
    return [images[i : i + batch_size] for i in range(0, len(images), batch_size)]


def _run(predictor: BenchmarkPredictor, batch: Sequence[np.ndarray]) -> List[Dict]:
    """``DefaultPredictor.__call__`` for one image, the batched call otherwise."""
    if len(batch) == 1:
        return [predictor(batch[0])]
    return predictor.predict_batch(batch)


def _progress(label: str, done: int, total: int, seconds: List[float], per_batch: int) -> None:
    step = max(1, total // 5)
    if done % step == 0 or done == total:
        median = np.median(seconds) * 1000 / per_batch
        logger.info(f"[{label}] {done}/{total} batches, median {median:.1f} ms/image so far")


def time_end_to_end(
    predictor: BenchmarkPredictor,
    images: Sequence[np.ndarray],
    settings: BenchmarkSettings,
    label: str = "",
) -> Dict:
    """
    Warm-up, then one timed predictor call per batch over all images.

    Returns:
        dict: per-image latency statistics ("median_ms", "p90_ms", "mean_ms", "min_ms"; a
        batch's time is divided by its size), "images_per_s", "detections_per_image",
        "peak_rss_mb" (process high-water mark while timing), "peak_cuda_mb".
    """
    batches = _batches(images, settings.batch_size)
    device = torch.device(settings.device)
    for i in range(settings.warmup):
        _run(predictor, batches[i % len(batches)])
    seconds, detections = [], []
    with PeakMemory(device) as memory:
        for k, batch in enumerate(batches):
            synchronize(device)
            start = time.perf_counter()
            outputs = _run(predictor, batch)
            synchronize(device)
            seconds.append(time.perf_counter() - start)
            detections.extend(len(o["instances"]) for o in outputs)
            _progress(label, k + 1, len(batches), seconds, len(batch))
    per_image = [s / len(b) for s, b in zip(seconds, batches)]
    stats = latency_stats(per_image)
    return {
        **{k: v for k, v in stats.items() if k != "total_s"},
        "images_per_s": len(images) / sum(seconds),
        "detections_per_image": float(np.mean(detections)),
        "peak_rss_mb": memory.rss_mb,
        "peak_cuda_mb": memory.cuda_mb,
    }


def profile_stages(
    predictor: BenchmarkPredictor, images: Sequence[np.ndarray], batch_size: int
) -> Dict:
    """
    YOLACT's per-stage times on its own inference path (see :func:`timed_stages`; median over
    batches, per image), their sum, the time of the calls they were measured in, the
    post-processing total and the mean number of candidates passing the score pre-filter.
    """
    per_stage = {s: [] for s in STAGES}
    sums, calls, postprocess, candidates = [], [], [], []
    for batch in _batches(images, batch_size):
        _, seconds, total, num_candidates = timed_stages(predictor, batch)
        for s in STAGES:
            per_stage[s].append(seconds[s] / len(batch))
        sums.append(sum(seconds.values()) / len(batch))
        calls.append(total / len(batch))
        postprocess.append(sum(seconds[s] for s in POSTPROCESS_STAGES) / len(batch))
        candidates.extend(num_candidates)
    row = {f"stage_{s}_ms": float(np.median(v)) * 1000 for s, v in per_stage.items()}
    row["stage_sum_ms"] = float(np.median(sums)) * 1000
    row["stage_call_ms"] = float(np.median(calls)) * 1000
    row["postprocess_ms"] = float(np.median(postprocess)) * 1000
    row["candidates_per_image"] = float(np.mean(candidates))
    return row


def model_statistics(predictor: BenchmarkPredictor, image: np.ndarray, flops: bool) -> Dict:
    """Parameters (millions) and, if asked, fvcore GFLOPs on ``image``."""
    row = {"params_m": count_parameters(predictor.model) / 1e6, "gflops": float("nan")}
    if flops:
        row["gflops"] = count_gflops(predictor.model, predictor.prepare(image))
    return row


def mask_agreement(
    reference: BenchmarkPredictor, predictor: BenchmarkPredictor, images: Sequence[np.ndarray]
) -> Dict:
    """Mean mask IoU of matched detections of ``predictor`` against ``reference``."""
    agreement = MaskAgreement()
    for image in images:
        agreement.add(reference(image)["instances"], predictor(image)["instances"])
    return {"mask_iou_vs_fp32": agreement.mean_iou, "matched_vs_fp32": agreement.matched_fraction}


def _build(name, precision, settings, weights, runtime="pytorch"):
    if runtime != "pytorch":
        return build_runtime_predictor(
            name,
            runtime,
            precision,
            settings.opts,
            weights,
            settings.seed,
            settings.threads,
            os.path.join(settings.output_dir, "export"),
        )
    return build_predictor(
        name, precision, settings.device, settings.opts, weights=weights, seed=settings.seed
    )


def _measure_precision(
    name: str,
    precision: str,
    images: Sequence[np.ndarray],
    settings: BenchmarkSettings,
    weights: Optional[str],
    runtime: str = "pytorch",
) -> Dict:
    label = f"{config_label(name)} {precision}" + (f" {runtime}" if runtime != "pytorch" else "")
    predictor = _build(name, precision, settings, weights, runtime)
    cfg = predictor.cfg
    row = {
        "config": config_label(name),
        "meta_arch": cfg.MODEL.META_ARCHITECTURE,
        "runtime": runtime,
        "precision": precision,
        "threads": settings.threads,
        "batch_size": settings.batch_size,
        "device": settings.device,
        "input": input_description(cfg),
        "images": len(images),
        "weights": os.path.basename(weights) if weights else "random (seeded)",
    }
    row.update(time_end_to_end(predictor, images, settings, label))
    if settings.stages and is_yolact(cfg) and runtime == "pytorch":
        row.update(profile_stages(predictor, images, settings.batch_size))
        row["postprocess_pct"] = 100 * row["postprocess_ms"] / row["median_ms"]
        if settings.synthetic_objects is not None:
            row.update(synthetic_postprocess(predictor, images, settings.synthetic_objects))
            # The same end-to-end time with the synthetic post-processing in place of the real.
            total = row["median_ms"] - row["postprocess_ms"] + row["synthetic_postprocess_ms"]
            row["synthetic_postprocess_pct"] = 100 * row["synthetic_postprocess_ms"] / total
    if weights and settings.eval_dataset:
        row.update(
            evaluate_ap(predictor, settings.eval_dataset, settings.output_dir, settings.eval_images)
        )
    logger.info(f"[{label}] median {row['median_ms']:.1f} ms/image")
    return row


def benchmark_config(
    name: str,
    precisions: Sequence[str],
    images: Sequence[np.ndarray],
    settings: BenchmarkSettings,
    weights: Optional[str] = None,
) -> List[Dict]:
    """
    All measurements of one config in each precision and runtime, one predictor alive at a time
    (so that each peak-memory figure is its own). Precisions that do not apply to the model
    (e.g. "fast" for Mask R-CNN) are skipped; the exported-model runtimes apply to YOLACT on
    CPU at batch size 1 (the graph takes one image).

    Returns:
        list[dict]: one row per (runtime, precision).
    """
    cfg = load_config(name, settings.opts, settings.device)
    supported = supported_precisions(cfg)
    jobs = []
    if "pytorch" in settings.runtimes:
        jobs += [("pytorch", p) for p in precisions]
    for runtime in settings.runtimes:
        if runtime == "pytorch":
            continue
        if not is_yolact(cfg) or settings.device != "cpu" or settings.batch_size != 1:
            logger.info(f"[{config_label(name)}] {runtime}: YOLACT on CPU, batch 1 only; skipped")
            continue
        jobs += [(runtime, p) for p in runtime_precisions(runtime, precisions)]
    rows = []
    statistics = None
    for runtime, precision in jobs:
        if precision not in supported:
            logger.info(f"[{config_label(name)}] {precision} does not apply; skipped")
            continue
        row = _measure_precision(name, precision, images, settings, weights, runtime)
        gc.collect()
        if statistics is None:
            predictor = _build(name, "fp32", settings, weights)
            statistics = model_statistics(predictor, images[0], settings.flops)
            del predictor
        row.update(statistics)
        rows.append(row)
    _add_mask_agreement(name, rows, images[: settings.iou_images], settings, weights)
    return rows


def _add_mask_agreement(name, rows, images, settings, weights) -> None:
    """
    Mask IoU of every row but PyTorch fp32 against PyTorch fp32 on the first ``iou_images``
    images.
    """
    others = [r for r in rows if (r["runtime"], r["precision"]) != ("pytorch", "fp32")]
    if not others or not images:
        return
    reference = _build(name, "fp32", settings, weights)
    for row in others:
        predictor = _build(name, row["precision"], settings, weights, row["runtime"])
        row.update(mask_agreement(reference, predictor, images))
        row["iou_images"] = len(images)
        del predictor
        gc.collect()


def add_relative_speed(rows: List[Dict], baseline: Optional[str]) -> None:
    """
    Adds "speedup_vs_fp32" (against PyTorch fp32 of the same config, threads and batch size)
    and, if ``baseline`` names a config label, "speedup_vs_baseline" (its PyTorch row of the
    same precision, threads and batch size; its fp32 row where it has no such precision, e.g.
    for YOLACT's "fast" path).
    """

    def key(row, config=None, precision=None, runtime=None):
        return (
            config or row["config"],
            runtime or row.get("runtime", "pytorch"),
            precision or row["precision"],
            row["threads"],
            row["batch_size"],
        )

    median = {key(r): r["median_ms"] for r in rows}
    for row in rows:
        fp32 = median.get(key(row, precision="fp32", runtime="pytorch"))
        row["speedup_vs_fp32"] = _ratio(fp32, row["median_ms"])
        if baseline:
            reference = median.get(key(row, config=baseline, runtime="pytorch"))
            if reference is None:
                reference = median.get(
                    key(row, config=baseline, precision="fp32", runtime="pytorch")
                )
            row["speedup_vs_baseline"] = _ratio(reference, row["median_ms"])


def _ratio(numerator: Optional[float], denominator: float) -> float:
    if numerator is None or not denominator or math.isnan(denominator):
        return float("nan")
    return numerator / denominator
