# Copyright (c) yolact_d2 contributors.
"""
YOLACT's post-processing on detector-like outputs. With random weights every prior passes the
score pre-filter (the worst case for NMS) while the decoded boxes are tiny (the best case for
pasting masks); this measurement replaces the class logits and boxes with
:func:`clustered_candidates` around an image's ground-truth objects and keeps the model's real
prototypes and coefficients, so that NMS, mask assembly and pasting see realistic work.
"""

import numpy as np
from typing import Dict, List, Sequence, Tuple

import torch

from yolact_d2.modeling.box_coder import decode_boxes

from .nms_benchmark import clustered_candidates
from .predictor import BenchmarkPredictor
from .stages import POSTPROCESS_STAGES, postprocess_stages
from .timing import Stopwatch

__all__ = ["synthetic_postprocess"]


def synthetic_postprocess(
    predictor: BenchmarkPredictor,
    images: Sequence[np.ndarray],
    objects: Sequence[Tuple[torch.Tensor, torch.Tensor]],
    seed: int = 0,
) -> Dict[str, float]:
    """
    Args:
        predictor (BenchmarkPredictor): a YOLACT predictor.
        images (list[np.ndarray]): BGR images.
        objects (list[(Tensor, Tensor)]): per image, (K, 4) relative XYXY boxes and (K,)
            classes (e.g. :func:`dataset_objects` of the images' dataset).
        seed (int): seed of the synthetic outputs.

    Returns:
        dict: median ms per image of each post-processing stage ("synthetic_stage_<s>_ms"),
        "synthetic_postprocess_ms" (their per-image sum, median), and the mean
        "synthetic_candidates_per_image" and "synthetic_detections_per_image".
    """
    model = predictor.model
    generator = torch.Generator().manual_seed(seed)
    per_stage: Dict[str, List[float]] = {s: [] for s in POSTPROCESS_STAGES}
    totals, candidates, detections = [], [], []
    with torch.no_grad(), predictor.autocast():
        for image, (object_boxes, object_classes) in zip(images, objects):
            inputs = predictor.prepare(image)
            outputs = model.predict(model.preprocess_image([inputs]))
            boxes, logits = clustered_candidates(
                outputs["priors"].cpu(), object_boxes, object_classes, generator, model.num_classes
            )
            outputs = dict(outputs, class_logits=logits[None].to(model.device))
            watch = Stopwatch(model.device)
            with watch("decode"):  # the real decoding cost; its boxes are replaced below
                decode_boxes(outputs["box_deltas"], outputs["priors"], model.box_variances)
            (instances,), (num_candidates,) = postprocess_stages(
                model,
                outputs,
                boxes[None].to(model.device),
                [(inputs["height"], inputs["width"])],
                watch,
            )
            seconds = watch.totals()
            for s in POSTPROCESS_STAGES:
                per_stage[s].append(seconds.get(s, 0.0))
            totals.append(sum(seconds.values()))
            candidates.append(num_candidates)
            detections.append(len(instances))
    row = {f"synthetic_stage_{s}_ms": 1000 * float(np.median(v)) for s, v in per_stage.items()}
    row["synthetic_postprocess_ms"] = 1000 * float(np.median(totals))
    row["synthetic_candidates_per_image"] = float(np.mean(candidates))
    row["synthetic_detections_per_image"] = float(np.mean(detections))
    return row
