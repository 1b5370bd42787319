# Copyright (c) yolact_d2 contributors.
"""
NMS variants on the same realistic candidate sets: all priors of an S x S input with C class
scores, put through the model's own score pre-filter and then each NMS, timed, and compared
with Fast NMS.

Candidates come either from a YOLACT model's decoded boxes and class logits on real images
(realistic with trained weights) or are synthesised around real object boxes (a dataset's
ground truth) the way a trained detector responds: priors overlapping an object regress
towards it and score its class (and a confusable class) in proportion to their overlap, the
rest is background with noise.
"""

import numpy as np
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from yolact_d2.layers import box_iou, build_nms, center_size_to_corners
from yolact_d2.modeling.box_coder import decode_boxes
from yolact_d2.modeling.postprocessing import select_candidates, suppress
from yolact_d2.modeling.priors import YolactPriorGenerator
from yolact_d2.utils.stages import synchronize

from .accuracy import evaluate_ap
from .predictor import build_predictor
from .timing import latency_stats

__all__ = [
    "NMS_METHODS",
    "CandidateSet",
    "yolact_priors",
    "dataset_objects",
    "random_objects",
    "clustered_candidates",
    "synthetic_candidate_sets",
    "model_candidate_sets",
    "benchmark_nms",
    "nms_ap",
]

# Method name -> NMS type of yolact_d2.layers.NMS_FUNCTIONS; "fast" is the reference.
NMS_METHODS = {
    "Fast NMS": "fast",
    "traditional NMS": "traditional",
    "cross-class Fast NMS": "cross_class",
    "torchvision batched_nms": "batched",
}


@dataclass
class CandidateSet:
    """
    One image's NMS input.

    Attributes:
        boxes (Tensor): (R, 4) relative XYXY boxes of all priors.
        scores (Tensor): (C, R) foreground scores (softmax, background dropped).
        candidates (Tensor): (n,) priors passing the score pre-filter.
        num_objects (int): objects the set was synthesised around (-1 for model outputs).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    candidates: torch.Tensor
    num_objects: int = -1

    def to(self, device) -> "CandidateSet":
        """The same set on ``device``."""
        return CandidateSet(
            self.boxes.to(device),
            self.scores.to(device),
            self.candidates.to(device),
            self.num_objects,
        )


def _feature_sizes(input_size: int, num_levels: int = 5, first_level: int = 3) -> List[int]:
    """Sides of P3..P7 for a ResNet/DarkNet-FPN: every stride-2 step rounds up."""
    sizes, side = [], input_size
    for level in range(1, first_level + num_levels):
        side = (side + 1) // 2
        if level >= first_level:
            sizes.append(side)
    return sizes


def yolact_priors(cfg) -> torch.Tensor:
    """
    Args:
        cfg (CfgNode): a YOLACT config (input size and priors).

    Returns:
        Tensor: (R, 4) relative (cx, cy, w, h) priors, R = 19248 at 550.
    """
    sizes = _feature_sizes(cfg.MODEL.YOLACT.INPUT_SIZE, len(cfg.MODEL.YOLACT.IN_FEATURES))
    return YolactPriorGenerator(cfg)([(s, s) for s in sizes])


def dataset_objects(
    dataset_name: str, num_images: Optional[int] = None, files: Optional[Sequence[str]] = None
) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """
    Non-crowd ground-truth objects of a registered detection dataset, per image: of its first
    ``num_images`` records, or of the records whose file names match ``files`` (by base name;
    images it does not hold get no objects).

    Returns:
        list[(Tensor, Tensor)]: (K, 4) relative XYXY boxes and (K,) contiguous class ids.
    """
    records = DatasetCatalog.get(dataset_name)
    if files is None:
        return [_record_objects(r) for r in records[:num_images]]
    by_name = {os.path.basename(r["file_name"]): r for r in records}
    empty = (torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.int64))
    return [
        _record_objects(by_name[os.path.basename(f)]) if os.path.basename(f) in by_name else empty
        for f in files
    ]


def _record_objects(record: Dict) -> Tuple[torch.Tensor, torch.Tensor]:
    annotations = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations]
    scale = torch.tensor([record["width"], record["height"]] * 2, dtype=torch.float32)
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) / scale
    classes = torch.tensor([a["category_id"] for a in annotations], dtype=torch.int64)
    return boxes, classes


def random_objects(
    num_images: int, generator: torch.Generator, num_classes: int = 80, mean_objects: float = 7.0
) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Random object boxes (Poisson count, 5-60% of the image side) and classes per image."""
    objects = []
    for _ in range(num_images):
        count = int(torch.poisson(torch.tensor(mean_objects), generator=generator))
        size = torch.rand(count, 2, generator=generator) * 0.55 + 0.05
        corner = torch.rand(count, 2, generator=generator) * (1 - size)
        classes = torch.randint(num_classes, (count,), generator=generator)
        objects.append((torch.cat([corner, corner + size], dim=1), classes))
    return objects


def clustered_candidates(
    priors: torch.Tensor,
    object_boxes: torch.Tensor,
    object_classes: torch.Tensor,
    generator: torch.Generator,
    num_classes: int = 80,
    background_logit: float = 6.0,
    object_logit: float = 12.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Detector-like outputs around known objects. With u the best IoU of a prior with an object:
    the prior's box moves towards that object by min(1.6 u, 1) (plus 5% noise of its size);
    all logits are N(0, 1), the background logit gets ``background_logit`` added, the object's
    class ``object_logit * u`` and one confusable class (fixed per object) half of that.

    Args:
        priors (Tensor): (R, 4) relative (cx, cy, w, h).
        object_boxes (Tensor): (K, 4) relative XYXY.
        object_classes (Tensor): (K,) in [0, C).
        generator (torch.Generator): randomness.
        num_classes (int): C.
        background_logit, object_logit (float): see above.

    Returns:
        boxes (Tensor): (R, 4) relative XYXY.
        class_logits (Tensor): (R, C + 1), background first.
    """
    num_priors = priors.shape[0]
    prior_boxes = center_size_to_corners(priors)
    noise = torch.randn(num_priors, 4, generator=generator) * 0.05 * priors[:, 2:].repeat(1, 2)
    logits = torch.randn(num_priors, num_classes + 1, generator=generator)
    logits[:, 0] += background_logit
    if len(object_boxes) == 0:
        return prior_boxes + noise, logits
    best_iou, best = box_iou(prior_boxes, object_boxes).max(dim=1)
    pull = (1.6 * best_iou).clamp(max=1)[:, None]
    boxes = prior_boxes + pull * (object_boxes[best] - prior_boxes) + noise
    confusable = torch.randint(num_classes, (len(object_boxes),), generator=generator)
    rows = torch.arange(num_priors)
    logits[rows, 1 + object_classes[best]] += object_logit * best_iou
    logits[rows, 1 + confusable[best]] += 0.5 * object_logit * best_iou
    return boxes, logits


def _candidate_set(
    boxes: torch.Tensor, class_logits: torch.Tensor, score_threshold: float, num_objects: int
) -> CandidateSet:
    scores, candidates = select_candidates(class_logits, score_threshold)
    return CandidateSet(boxes.float(), scores, candidates, num_objects)


def synthetic_candidate_sets(
    priors: torch.Tensor,
    objects: Sequence[Tuple[torch.Tensor, torch.Tensor]],
    seed: int = 0,
    num_classes: int = 80,
    score_threshold: float = 0.05,
) -> List[CandidateSet]:
    """:func:`clustered_candidates` for each image's objects, then the score pre-filter."""
    generator = torch.Generator().manual_seed(seed)
    sets = []
    for boxes, classes in objects:
        out_boxes, logits = clustered_candidates(priors, boxes, classes, generator, num_classes)
        sets.append(_candidate_set(out_boxes, logits, score_threshold, len(boxes)))
    return sets


def model_candidate_sets(predictor, images: Sequence[np.ndarray]) -> List[CandidateSet]:
    """
    A YOLACT predictor's decoded boxes and class logits on real images (meaningful with trained
    weights; with random weights every prior passes the pre-filter, the worst case).
    """
    model = predictor.model
    sets = []
    with torch.no_grad():
        for image in images:
            inputs = model.preprocess_image([predictor.prepare(image)])
            outputs = model.predict(inputs)
            boxes = decode_boxes(outputs["box_deltas"], outputs["priors"], model.box_variances)
            sets.append(
                _candidate_set(
                    boxes[0].cpu(),
                    outputs["class_logits"][0].cpu(),
                    model.postprocess_settings.score_threshold,
                    -1,
                )
            )
    return sets


def _time_method(nms, candidate_set: CandidateSet, repeats: int) -> Tuple[float, Dict]:
    """Median time of ``suppress`` over ``repeats`` (>= 1) runs after one warm-up run (CUDA
    work waited for at both ends of each run)."""
    args = (candidate_set.boxes, candidate_set.scores, candidate_set.candidates, nms)
    device = candidate_set.scores.device
    detections = suppress(*args)
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        suppress(*args)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)), detections


def _kept(detections: Dict) -> set:
    """Kept detections as (class, prior index) pairs."""
    return set(zip(detections["classes"].tolist(), detections["indices"].tolist()))


def benchmark_nms(
    candidate_sets: Sequence[CandidateSet],
    repeats: int = 5,
    methods: Optional[Dict[str, str]] = None,
    nms_settings: Optional[Dict] = None,
) -> List[Dict]:
    """
    Times each NMS method on every candidate set (the same inputs, through the model's own
    ``suppress``) and compares its kept detections with Fast NMS's.

    Args:
        candidate_sets (list[CandidateSet]): one per image.
        repeats (int): timed runs per method and image, >= 1 (the median is kept).
        methods (dict or None): name -> NMS type; defaults to :data:`NMS_METHODS`, whose first
            entry ("fast") is the reference.
        nms_settings (dict or None): keyword arguments of :func:`build_nms` (YOLACT's defaults:
            IoU 0.5, top-k 200, 100 detections, score threshold 0.05, input 550).

    Returns:
        list[dict]: one row per method: "method", "nms_type", "median_ms", "p90_ms" (over
        images), "kept_per_image", "only_method_per_image" / "only_fast_per_image" (kept by one
        of the two only, as (class, prior) pairs), "differing_pct" (of the method's kept
        detections), "time_vs_fast", "candidates_per_image", "images".
    """
    methods = methods or NMS_METHODS
    nms_settings = nms_settings or {}
    reference = build_nms("fast", **nms_settings)
    reference_kept = [
        _kept(suppress(s.boxes, s.scores, s.candidates, reference)) for s in candidate_sets
    ]
    rows = []
    for name, nms_type in methods.items():
        nms = build_nms(nms_type, **nms_settings)
        seconds, kept_counts, only_method, only_fast = [], [], [], []
        for candidate_set, fast_kept in zip(candidate_sets, reference_kept):
            median, detections = _time_method(nms, candidate_set, repeats)
            kept = _kept(detections)
            seconds.append(median)
            kept_counts.append(len(kept))
            only_method.append(len(kept - fast_kept))
            only_fast.append(len(fast_kept - kept))
        stats = latency_stats(seconds)
        rows.append(
            {
                "method": name,
                "nms_type": nms_type,
                "median_ms": stats["median_ms"],
                "p90_ms": stats["p90_ms"],
                "kept_per_image": float(np.mean(kept_counts)),
                "only_method_per_image": float(np.mean(only_method)),
                "only_fast_per_image": float(np.mean(only_fast)),
                "differing_pct": 100 * sum(only_method) / max(1, sum(kept_counts)),
                "candidates_per_image": float(np.mean([len(s.candidates) for s in candidate_sets])),
                "images": len(candidate_sets),
            }
        )
    fast_ms = next((r["median_ms"] for r in rows if r["nms_type"] == "fast"), float("nan"))
    for row in rows:
        row["time_vs_fast"] = row["median_ms"] / fast_ms
    return rows


def nms_ap(
    config: str,
    weights: str,
    dataset_name: str,
    output_dir: str,
    nms_types: Sequence[str],
    num_images: Optional[int] = None,
    opts: Sequence[str] = (),
    device: str = "cpu",
) -> Dict[str, Dict[str, float]]:
    """
    Mask and box AP of one set of YOLACT weights with each NMS type.

    Returns:
        dict: NMS type -> {"mask_ap", "box_ap"}.
    """
    results = {}
    for nms_type in nms_types:
        predictor = build_predictor(
            config, "fp32", device, [*opts, "MODEL.YOLACT.TEST.NMS_TYPE", nms_type], weights
        )
        out = os.path.join(output_dir, f"nms_{nms_type}")
        results[nms_type] = evaluate_ap(predictor, dataset_name, out, num_images)
    return results
