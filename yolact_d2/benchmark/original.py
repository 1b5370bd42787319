# Copyright (c) yolact_d2 contributors.
"""
The original YOLACT implementation (dbolya/yolact) as a benchmark row: the same weights (the
yolact_d2 model's, renamed to the reference's keys), the same images and threads, timed in a
child process (:mod:`~yolact_d2.benchmark.original_worker`) on a checkout the user provides
(``tools/benchmark.py --original-repo DIR``), and its detections compared with yolact_d2's.
"""

import json
import numpy as np
import os
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

import pycocotools.mask as mask_util
import torch

from detectron2.structures import Boxes, Instances

from yolact_d2.checkpoint import reference_config_name, to_reference_state_dict
from yolact_d2.evaluation.mask_agreement import MaskAgreement
from yolact_d2.utils.file_io import atomic_open

from .timing import latency_stats

__all__ = [
    "PARITY_SCORE_TOLERANCE",
    "PARITY_BOX_TOLERANCE",
    "original_config",
    "check_original_repo",
    "run_original",
    "original_instances",
    "parity_with_original",
    "original_row_statistics",
]

# "The same detection" of the performance issue's parity: same class, scores within 2e-3, boxes
# within 2 px (the original truncates its pixel boxes to integers).
PARITY_SCORE_TOLERANCE = 2e-3
PARITY_BOX_TOLERANCE = 2.0


def original_config(config_file: str, cfg) -> Optional[Dict]:
    """
    The original's config for a yolact_d2 YOLACT config: ``{"name": ..., "backbone_type": ...,
    "overrides": {...}}`` with the input size, class count and test-time thresholds of ``cfg``
    (prior scales are pixels of the input, so a smaller input keeps them, as
    ``configs/tiny_coco`` does; the child checks they agree), or None where the original has no
    such architecture (e.g. the R-18 demo config).

    Args:
        config_file (str): the yolact_d2 config file (matched by file name, its own or that
            of the first ``_BASE_`` config with a reference counterpart).
        cfg (CfgNode): the config it was loaded into, with any overrides.
    """
    found = _reference_of(config_file)
    if found is None:
        return None
    name, backbone_type = found
    test = cfg.MODEL.YOLACT.TEST
    return {
        "name": f"{name}_config",
        "backbone_type": backbone_type,
        "input_size": cfg.MODEL.YOLACT.INPUT_SIZE,
        "pred_scales": [list(map(float, s)) for s in cfg.MODEL.YOLACT.PRIORS.SCALES],
        "overrides": {
            "max_size": cfg.MODEL.YOLACT.INPUT_SIZE,
            "num_classes": cfg.MODEL.YOLACT.NUM_CLASSES + 1,
            "nms_top_k": test.TOP_K,
            "nms_conf_thresh": test.SCORE_THRESH,
            "nms_thresh": test.NMS_THRESH,
            "max_num_detections": test.DETECTIONS_PER_IMAGE,
        },
    }


def _reference_of(config_file: str):
    """:func:`reference_config_name` of the config or of the first ``_BASE_`` it derives from."""
    import yaml

    from .predictor import resolve_config_file

    path = resolve_config_file(config_file)
    for _ in range(16):
        found = reference_config_name(path)
        if found is not None:
            return found
        with open(path) as f:
            base = (yaml.safe_load(f) or {}).get("_BASE_")
        if not base:
            return None
        path = os.path.join(os.path.dirname(path), base)
    return None


def check_original_repo(repo: str) -> str:
    """The absolute checkout path; a clear error if it is not a dbolya/yolact checkout."""
    repo = os.path.abspath(repo)
    needed = ("yolact.py", "eval.py", "data/config.py")
    missing = [f for f in needed if not os.path.isfile(os.path.join(repo, f))]
    if missing:
        raise FileNotFoundError(
            f"--original-repo {repo}: not a checkout of dbolya/yolact "
            f"(missing {', '.join(missing)})"
        )
    return repo


def _save_reference_weights(model: torch.nn.Module, backbone_type: str, path: str) -> None:
    state_dict = to_reference_state_dict(model.state_dict(), backbone_type)
    with atomic_open(path, "wb") as f:
        torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, f)


def run_original(
    repo: str,
    config: Dict,
    model: torch.nn.Module,
    files: Sequence[str],
    threads: int,
    warmup: int,
    keep: int,
    work_dir: str,
) -> Dict:
    """
    Times the original on ``files`` with ``model``'s weights in a child process.

    Returns:
        dict: the child's report: "seconds" (one per image), "num_detections", "detections"
        (for the first ``keep`` images: classes, scores, pixel boxes, RLE masks),
        "peak_rss_mb".
    """
    os.makedirs(work_dir, exist_ok=True)
    weights = os.path.join(work_dir, f"{config['name']}_weights.pth")
    output = os.path.join(work_dir, f"{config['name']}_result.json")
    _save_reference_weights(model, config["backbone_type"], weights)
    command = [
        sys.executable,
        "-m",
        "yolact_d2.benchmark.original_worker",
        "--repo",
        repo,
        "--config",
        config["name"],
        "--overrides",
        json.dumps(config["overrides"]),
        "--weights",
        weights,
        "--threads",
        str(threads),
        "--warmup",
        str(warmup),
        "--keep",
        str(keep),
        "--output",
        output,
        "--images",
        *files,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"the original implementation at {repo} failed (exit {done.returncode}):\n"
            + done.stderr[-3000:]
        )
    with open(output) as f:
        report = json.load(f)
    if report["pred_scales"] != config["pred_scales"]:
        raise ValueError(
            f"the original's {config['name']} has prior scales {report['pred_scales']}, the "
            f"yolact_d2 config {config['pred_scales']}: not the same model"
        )
    return report


def original_instances(detections: Dict) -> Instances:
    """One image's detections of the child's report as Detectron2 ``Instances``."""
    masks = mask_util.decode(detections["masks"]) if detections["masks"] else None
    height, width = detections["masks"][0]["size"] if detections["masks"] else (1, 1)
    instances = Instances((height, width))
    instances.pred_boxes = Boxes(torch.tensor(detections["boxes"], dtype=torch.float32).view(-1, 4))
    instances.scores = torch.tensor(detections["scores"], dtype=torch.float32)
    instances.pred_classes = torch.tensor(detections["classes"], dtype=torch.int64)
    if masks is None:
        instances.pred_masks = torch.zeros(0, height, width, dtype=torch.bool)
    else:
        instances.pred_masks = torch.from_numpy(
            np.ascontiguousarray(masks.transpose(2, 0, 1))
        ).bool()
    return instances


def parity_with_original(report: Dict, ours: List[Instances]) -> MaskAgreement:
    """
    yolact_d2's detections (``ours``, one ``Instances`` per kept image) matched one to one
    with the original's (same class, scores within :data:`PARITY_SCORE_TOLERANCE`, boxes within
    :data:`PARITY_BOX_TOLERANCE` px), and the masks of matched pairs compared.
    """
    agreement = MaskAgreement(
        score_tolerance=PARITY_SCORE_TOLERANCE, box_tolerance=PARITY_BOX_TOLERANCE
    )
    for theirs, mine in zip(report["detections"], ours):
        agreement.add(original_instances(theirs), mine)
    return agreement


def original_row_statistics(report: Dict) -> Dict:
    """Latency, throughput, detections and memory figures of the child's report."""
    stats = latency_stats(report["seconds"])
    return {
        **{k: v for k, v in stats.items() if k != "total_s"},
        "images_per_s": len(report["seconds"]) / stats["total_s"],
        "detections_per_image": float(np.mean(report["num_detections"])),
        "peak_rss_mb": report["peak_rss_mb"],
    }
