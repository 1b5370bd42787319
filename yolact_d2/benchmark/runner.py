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
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from yolact_d2.evaluation.mask_agreement import MaskAgreement
from yolact_d2.utils.stages import POSTPROCESS_STAGES, STAGES

from .accuracy import evaluate_ap
from .analysis import count_gflops, count_parameters
from .calibration import calibrate_detections
from .images import dataset_image_files, load_images
from .original import (
    PARITY_BOX_TOLERANCE,
    PARITY_SCORE_TOLERANCE,
    original_config,
    original_row_statistics,
    parity_with_original,
    run_original,
)
from .predictor import (
    BenchmarkPredictor,
    build_predictor,
    config_label,
    input_description,
    is_yolact,
    load_config_spec,
    parse_config_spec,
    supported_precisions,
)
from .runtimes import RUNTIMES, build_runtime_predictor, runtime_precisions
from .stage_breakdown import synthetic_postprocess, timed_stages
from .timing import PeakMemory, latency_stats, synchronize

__all__ = [
    "RUNTIMES",
    "BenchmarkSettings",
    "benchmark_config",
    "add_relative_speed",
    "memory_by_image_size",
]

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
        iou_images (int): images on which non-fp32 masks are compared with fp32 ones (the
            first timing images; for trained weights, the first of their evaluation dataset).
        opts (list[str]): extra KEY VALUE config pairs for every config.
        output_dir (str): where evaluators write their files.
        eval_dataset (str or None): registered dataset for AP (when weights are given); None:
            each config's ``DATASETS.TEST[0]``.
        eval_images (int or None): evaluate AP on the first images of ``eval_dataset`` only.
        synthetic_objects (list or None): per image, ground-truth (boxes, classes) to also
            time YOLACT's post-processing on detector-like outputs around them
            (:func:`synthetic_postprocess`).
        runtimes (list[str]): of :data:`RUNTIMES`: "pytorch" (the PyTorch model in each
            precision), the runtimes YOLACT's exported ONNX model is timed on, and "original"
            (the original implementation at ``original_repo`` on the same weights).
        image_files (list[str] or None): the files of the images (the original reads them).
        original_repo (str or None): a checkout of dbolya/yolact.
        calibration_images (list[ndarray] or None): BGR images on which YOLACT's random
            weights are calibrated to detect like a trained model (:func:`calibrate_detections`)
            when no weights are given; None keeps them as initialised.
        int8_calibration_images (int): training images the int8 rows calibrate their
            activation ranges on.
        int8_calibration_dataset (str or None): where those come from; None: the config's
            ``DATASETS.TRAIN[0]`` for trained weights (their own training data), tiny_coco's
            train split for random weights.
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
    image_files: Optional[List[str]] = None
    original_repo: Optional[str] = None
    calibration_images: Optional[List[np.ndarray]] = None
    int8_calibration_images: int = 32
    int8_calibration_dataset: Optional[str] = None


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
        "peak_rss_mb" (process high-water mark while timing), "peak_cuda_mb", "first_call_s"
        (the first warm-up call: includes any compilation).
    """
    batches = _batches(images, settings.batch_size)
    device = torch.device(settings.device)
    first_call = float("nan")
    for i in range(settings.warmup):
        start = time.perf_counter()
        _run(predictor, batches[i % len(batches)])
        if i == 0:
            first_call = time.perf_counter() - start
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
        "first_call_s": first_call,
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
    """
    Mean mask IoU of matched detections of ``predictor`` against ``reference`` (matched by class
    and box IoU), and the fraction of detections that are the same within the parity tolerances
    (one to one: same class, scores within 2e-3, boxes within 2 px).
    """
    agreement = MaskAgreement()
    same = MaskAgreement(score_tolerance=PARITY_SCORE_TOLERANCE, box_tolerance=PARITY_BOX_TOLERANCE)
    for image in images:
        theirs, ours = reference(image)["instances"], predictor(image)["instances"]
        agreement.add(theirs, ours)
        same.add(theirs, ours)
    return {
        "mask_iou_vs_fp32": agreement.mean_iou,
        "matched_vs_fp32": agreement.matched_fraction,
        "same_vs_fp32": same.one_to_one_fraction,
        "same_mask_iou_vs_fp32": same.mean_iou,
    }


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
            _int8_images(name, settings, weights) if precision == "int8" else None,
        )
    return build_predictor(
        name, precision, settings.device, settings.opts, weights=weights, seed=settings.seed
    )


def _row(name: str, cfg, precision: str, runtime: str, images, settings, weights_label: str):
    return {
        "config": config_label(name),
        "meta_arch": cfg.MODEL.META_ARCHITECTURE,
        "runtime": runtime,
        "precision": precision,
        "threads": settings.threads,
        "batch_size": settings.batch_size,
        "device": settings.device,
        "input": input_description(cfg, [image.shape[:2] for image in images]),
        "images": len(images),
        "weights": weights_label,
    }


def _eval_dataset(settings: BenchmarkSettings, cfg) -> Optional[str]:
    """The dataset AP (and trained models' agreement) is measured on: ``eval_dataset`` or the
    config's ``DATASETS.TEST[0]``."""
    return settings.eval_dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)


def _objects_fit(objects, num_classes: int) -> bool:
    """Whether the synthetic post-processing's objects (boxes, classes) exist for this model."""
    if objects is None:
        return False
    classes = [int(c.max()) for _, c in objects if len(c)]
    return not classes or max(classes) < num_classes


_TRAINING_IMAGES: Dict[Tuple[str, int], List[np.ndarray]] = {}
# Weight files written by _calibrated_weights (random weights, not a trained model).
_CALIBRATED: set = set()


def _int8_images(name: str, settings: BenchmarkSettings, weights: Optional[str]):
    """The int8 calibration images of a config (see ``int8_calibration_dataset``), BGR."""
    dataset = settings.int8_calibration_dataset
    if dataset is None:
        cfg = load_config_spec(name, settings.opts)
        trained = weights is not None and weights not in _CALIBRATED
        dataset = cfg.DATASETS.TRAIN[0] if trained and cfg.DATASETS.TRAIN else "tiny_coco_train"
    key = (dataset, settings.int8_calibration_images)
    if key not in _TRAINING_IMAGES:
        files = dataset_image_files(dataset, settings.int8_calibration_images)
        _TRAINING_IMAGES[key] = load_images(files)
        logger.info(f"[{config_label(name)}] int8 calibration: {len(files)} images of {dataset}")
    return _TRAINING_IMAGES[key]


def _measure_original(
    name: str, images: Sequence[np.ndarray], settings: BenchmarkSettings, weights, weights_label
) -> Optional[Dict]:
    """
    The original implementation's row: timed in a child process on the same image files,
    weights and threads, its detections on the first ``iou_images`` images compared with this
    project's fp32 ones ("same_vs_fp32": the one-to-one fraction within the parity tolerances).
    """
    predictor = _build(name, "fp32", settings, weights)
    cfg = predictor.cfg
    config = original_config(parse_config_spec(name)[0], cfg)
    if config is None or settings.batch_size != 1 or settings.device != "cpu":
        logger.info(f"[{config_label(name)}] original: no such reference config / not CPU batch 1")
        return None
    if not settings.original_repo or settings.image_files is None:
        raise ValueError("the 'original' runtime needs --original-repo and image files")
    keep = min(settings.iou_images, len(images))
    report = run_original(
        settings.original_repo,
        config,
        predictor.model,
        settings.image_files,
        settings.threads,
        settings.warmup,
        keep,
        os.path.join(settings.output_dir, "original"),
    )
    row = _row(name, cfg, "fp32", "original", images, settings, weights_label)
    row.update(original_row_statistics(report))
    ours = [predictor(image)["instances"] for image in images[:keep]]
    agreement = parity_with_original(report, ours)
    row["same_vs_fp32"] = agreement.one_to_one_fraction
    row["same_mask_iou_vs_fp32"] = agreement.mean_iou
    row["iou_images"] = keep
    logger.info(f"[{config_label(name)} original] median {row['median_ms']:.1f} ms/image")
    return row


def _measure_precision(
    name: str,
    precision: str,
    images: Sequence[np.ndarray],
    settings: BenchmarkSettings,
    weights: Optional[str],
    runtime: str = "pytorch",
    evaluate: bool = True,
    weights_label: str = "",
) -> Optional[Dict]:
    weights_label = weights_label or (os.path.basename(weights) if weights else "random (seeded)")
    if runtime == "original":
        return _measure_original(name, images, settings, weights, weights_label)
    label = f"{config_label(name)} {precision}" + (f" {runtime}" if runtime != "pytorch" else "")
    predictor = _build(name, precision, settings, weights, runtime)
    cfg = predictor.cfg
    row = _row(name, cfg, precision, runtime, images, settings, weights_label)
    row.update(time_end_to_end(predictor, images, settings, label))
    if settings.stages and is_yolact(cfg) and runtime == "pytorch":
        row.update(profile_stages(predictor, images, settings.batch_size))
        row["postprocess_pct"] = 100 * row["postprocess_ms"] / row["median_ms"]
        if _objects_fit(settings.synthetic_objects, cfg.MODEL.YOLACT.NUM_CLASSES):
            row.update(synthetic_postprocess(predictor, images, settings.synthetic_objects))
            # The same end-to-end time with the synthetic post-processing in place of the real.
            total = row["median_ms"] - row["postprocess_ms"] + row["synthetic_postprocess_ms"]
            row["synthetic_postprocess_pct"] = 100 * row["synthetic_postprocess_ms"] / total
    eval_dataset = _eval_dataset(settings, cfg)
    if weights and evaluate and eval_dataset:
        row.update(evaluate_ap(predictor, eval_dataset, settings.output_dir, settings.eval_images))
        row["eval_dataset"] = eval_dataset
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
    cfg = load_config_spec(name, settings.opts, settings.device)
    supported = supported_precisions(cfg)
    jobs = []
    if "pytorch" in settings.runtimes:
        jobs += [("pytorch", p) for p in precisions if p != "int8"]
    for runtime in settings.runtimes:
        if runtime == "pytorch":
            continue
        if not is_yolact(cfg) or settings.device != "cpu" or settings.batch_size != 1:
            logger.info(f"[{config_label(name)}] {runtime}: YOLACT on CPU, batch 1 only; skipped")
            continue
        jobs += [(runtime, p) for p in runtime_precisions(runtime, precisions)]
    evaluate, weights_label = True, ""
    if weights is None and is_yolact(cfg) and settings.calibration_images:
        weights = _calibrated_weights(name, settings)
        evaluate, weights_label = False, "random (seeded), calibrated"
    rows = []
    statistics = None
    for runtime, precision in jobs:
        if precision not in supported:
            logger.info(f"[{config_label(name)}] {precision} does not apply; skipped")
            continue
        row = _measure_precision(
            name, precision, images, settings, weights, runtime, evaluate, weights_label
        )
        gc.collect()
        if row is None:
            continue
        if statistics is None:
            predictor = _build(name, "fp32", settings, weights)
            statistics = model_statistics(predictor, images[0], settings.flops)
            del predictor
        row.update(statistics)
        rows.append(row)
    agreement_images, source = images[: settings.iou_images], "timing images"
    eval_dataset = _eval_dataset(settings, cfg)
    if evaluate and weights and eval_dataset and settings.iou_images > 0:
        # A trained model is compared on its own validation images.
        agreement_images = load_images(dataset_image_files(eval_dataset, settings.iou_images))
        source = eval_dataset
    _add_mask_agreement(name, rows, agreement_images, settings, weights)
    for row in rows:
        if "mask_iou_vs_fp32" in row:
            row["iou_source"] = source
    return rows


def _calibrated_weights(name: str, settings: BenchmarkSettings) -> str:
    """
    The config's seeded random weights calibrated on ``settings.calibration_images``
    (:func:`calibrate_detections`), written once to ``output_dir/calibrated/`` so that every
    row of the config runs them.
    """
    from yolact_d2.utils.file_io import atomic_open

    predictor = _build(name, "fp32", settings, None)
    model = predictor.model
    rgb = model.input_format == "RGB"
    calibrate_detections(
        model, [i[:, :, ::-1].copy() if rgb else i for i in settings.calibration_images]
    )
    directory = os.path.join(settings.output_dir, "calibrated")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, config_label(name).replace("/", "_") + ".pth")
    with atomic_open(path, "wb") as f:
        torch.save({"model": model.state_dict()}, f)
    _CALIBRATED.add(path)
    logger.info(
        f"[{config_label(name)}] random weights calibrated on "
        f"{len(settings.calibration_images)} images: {path}"
    )
    return path


def _add_mask_agreement(name, rows, images, settings, weights) -> None:
    """
    Mask IoU of every row but PyTorch fp32 against PyTorch fp32 on ``images`` (the first
    ``iou_images`` timing images; for trained weights, of their evaluation dataset).
    """
    others = [
        r
        for r in rows
        if (r["runtime"], r["precision"]) != ("pytorch", "fp32") and r["runtime"] != "original"
    ]
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
    Adds "speedup_vs_fp32" (against PyTorch fp32 of the same config, threads and batch size),
    "speedup_vs_original" (against the original implementation's row of the config, if any)
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
        original = median.get(key(row, precision="fp32", runtime="original"))
        row["speedup_vs_original"] = _ratio(original, row["median_ms"])
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


def memory_by_image_size(
    name: str,
    image: np.ndarray,
    sizes: Sequence[Tuple[int, int]],
    settings: BenchmarkSettings,
    precision: str = "fp32",
    weights: Optional[str] = None,
) -> List[Dict]:
    """
    Peak memory of one ``DefaultPredictor`` call per image size: ``image`` resized to each
    (width, height), one untimed call first, then the process's resident-set high-water mark
    reset and measured around a second call (so each figure is the process's peak during that
    call: model, libraries and the call's own allocations). Random weights are calibrated first
    when ``settings.calibration_images`` are given (realistic boxes and masks).

    Returns:
        list[dict]: per size "config", "precision", "image_size", "detections", "peak_rss_mb",
        "masks_mb" (the returned ``pred_masks``) and "rss_vs_first" (peak over the first size's).
    """
    import cv2

    if weights is None and settings.calibration_images:
        weights = _calibrated_weights(name, settings)
    predictor = _build(name, precision, settings, weights)
    rows = []
    for width, height in sizes:
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        predictor(resized)
        gc.collect()
        with PeakMemory(torch.device(settings.device)) as memory:
            instances = predictor(resized)["instances"]
        masks = instances.pred_masks
        masks_mb = masks.nbytes / 2**20 if hasattr(masks, "nbytes") else float("nan")
        rows.append(
            {
                "config": config_label(name),
                "precision": precision,
                "image_size": f"{width}x{height}",
                "detections": len(instances),
                "peak_rss_mb": memory.rss_mb,
                "masks_mb": masks_mb,
            }
        )
        del instances, masks
    for row in rows:
        row["rss_vs_first"] = row["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    return rows
