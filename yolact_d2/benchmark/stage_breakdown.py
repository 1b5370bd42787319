# Copyright (c) yolact_d2 contributors.
"""
YOLACT's time per inference stage, measured on the model's own inference path: the predictor
runs as users run it, and a :class:`~yolact_d2.utils.stages.StageRecorder` times the stages the
model marks (see :data:`~yolact_d2.utils.stages.STAGES`). Nothing of the inference is
re-implemented here.
"""

import numpy as np
import time
from typing import Dict, List, Sequence, Tuple

import torch

from yolact_d2.modeling.box_coder import encode_boxes
from yolact_d2.utils.stages import POSTPROCESS_STAGES, StageRecorder, synchronize

from .nms_benchmark import clustered_candidates
from .predictor import BenchmarkPredictor

__all__ = ["timed_stages", "synthetic_postprocess"]


def timed_stages(
    predictor: BenchmarkPredictor, images: Sequence[np.ndarray]
) -> Tuple[List[Dict], Dict[str, float], float, List[int]]:
    """
    One batch through :meth:`BenchmarkPredictor.predict_batch` with its stages timed.

    Returns:
        outputs (list[dict]): the predictions, as ``predict_batch`` returns them.
        seconds (dict[str, float]): time of each stage for the whole batch.
        total (float): seconds of the whole call (the stages are parts of it).
        num_candidates (list[int]): priors passing the score pre-filter, per image.
    """
    device = torch.device(predictor.cfg.MODEL.DEVICE)
    with StageRecorder(device) as recorder:
        synchronize(device)
        start = time.perf_counter()
        outputs = predictor.predict_batch(images)
        synchronize(device)
        total = time.perf_counter() - start
    candidates = [int(n) for n in recorder.counts.get("candidates", [])]
    return outputs, recorder.seconds(), total, candidates


def synthetic_postprocess(
    predictor: BenchmarkPredictor,
    images: Sequence[np.ndarray],
    objects: Sequence[Tuple[torch.Tensor, torch.Tensor]],
    seed: int = 0,
) -> Dict[str, float]:
    """
    The model's post-processing on realistic candidates. With random weights every prior passes
    the score pre-filter (the worst case for NMS) while the decoded boxes are tiny (the best
    case for pasting masks); here the class logits and box deltas of the network's outputs are
    replaced by :func:`clustered_candidates` around each image's ground-truth objects (the
    boxes encoded against the priors, so that the model's own decoding recovers them), the
    real prototypes and coefficients are kept, and ``Yolact.inference`` runs on them.

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
            priors = outputs["priors"]
            boxes, logits = clustered_candidates(
                priors.cpu(), object_boxes, object_classes, generator, model.num_classes
            )
            deltas = encode_boxes(boxes.to(priors.device), priors, model.box_variances)
            outputs = dict(
                outputs, class_logits=logits[None].to(model.device), box_deltas=deltas[None]
            )
            with StageRecorder(model.device) as recorder:
                (instances,) = model.postprocess(outputs, [(inputs["height"], inputs["width"])])
            seconds = recorder.seconds()
            for s in POSTPROCESS_STAGES:
                per_stage[s].append(seconds[s])
            totals.append(sum(seconds[s] for s in POSTPROCESS_STAGES))
            candidates.extend(recorder.counts["candidates"])
            detections.append(len(instances))
    row = {f"synthetic_stage_{s}_ms": 1000 * float(np.median(v)) for s, v in per_stage.items()}
    row["synthetic_postprocess_ms"] = 1000 * float(np.median(totals))
    row["synthetic_candidates_per_image"] = float(np.mean(candidates))
    row["synthetic_detections_per_image"] = float(np.mean(detections))
    return row
