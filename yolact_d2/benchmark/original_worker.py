# Copyright (c) yolact_d2 contributors.
"""
Child process of :mod:`yolact_d2.benchmark.original`: times the original YOLACT implementation
(a checkout of dbolya/yolact that the user provides; nothing of it ships with yolact_d2) on CPU,
on images and weights given by the parent, the way its ``eval.py`` runs one image:
``FastBaseTransform`` -> ``Yolact`` (Fast NMS on, cross-class NMS off) -> ``postprocess``
(masks cropped, pasted at the image's size and binarised; boxes in pixels).

It runs in its own process because the original imports top-level packages named ``data``,
``layers`` and ``utils`` and reads a global config. Three shims make it run without CUDA, none of
which changes a computation: ``torch.cuda.current_device`` (called at import for a Windows
driver quirk) returns 0, ``torch.cuda.device_count`` reports 2 while importing ``yolact`` (which
turns its TorchScript wrappers of the FPN off: TorchScript is deprecated in this torch), and
``Tensor.cuda`` returns the tensor itself (its ``FastBaseTransform`` moves its mean and std with
it).

Usage (the parent builds this command)::

    python -m yolact_d2.benchmark.original_worker --repo DIR --config yolact_resnet50_config \\
        --weights W.pth --images A.jpg B.jpg --threads 2 --warmup 3 --keep 10 --output R.json
"""

import argparse
import contextlib
import json
import numpy as np
import sys
import time
from typing import Dict, List

import cv2
import pycocotools.mask as mask_util
import torch

from yolact_d2.benchmark.timing import PeakMemory


@contextlib.contextmanager
def _cpu_shims(import_time: bool):
    """The CUDA calls of the original made harmless on a CPU-only machine (see module doc)."""
    saved = (torch.cuda.current_device, torch.cuda.device_count, torch.Tensor.cuda)
    torch.cuda.current_device = lambda: 0
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    if import_time:
        torch.cuda.device_count = lambda: 2
    try:
        yield
    finally:
        torch.cuda.current_device, torch.cuda.device_count, torch.Tensor.cuda = saved


def _load_original(repo: str, config: str, overrides: Dict):
    """Imports the original from ``repo`` and sets its global config."""
    sys.path.insert(0, repo)
    with _cpu_shims(import_time=True):
        from data.config import cfg, set_cfg
        from layers.output_utils import postprocess
        from utils.augmentations import FastBaseTransform
        from yolact import Yolact
    set_cfg(config)
    cfg.replace(overrides)
    cfg.mask_proto_debug = False
    return cfg, Yolact, FastBaseTransform, postprocess


def _detections(classes, scores, boxes, masks) -> Dict:
    """One image's detections as JSON (masks as COCO RLE)."""
    binary = np.asfortranarray(masks.numpy().astype(np.uint8).transpose(1, 2, 0))
    rles = mask_util.encode(binary) if len(classes) else []
    return {
        "classes": classes.tolist(),
        "scores": scores.tolist(),
        "boxes": boxes.tolist(),
        "masks": [{"size": r["size"], "counts": r["counts"].decode()} for r in rles],
    }


def run(args) -> Dict:
    torch.set_num_threads(args.threads)
    cfg, Yolact, FastBaseTransform, postprocess = _load_original(
        args.repo, args.config, json.loads(args.overrides)
    )
    with _cpu_shims(import_time=False), torch.no_grad():
        net = Yolact()
        net.load_weights(args.weights)
        net.eval()
        net.detect.use_fast_nms = True
        net.detect.use_cross_class_nms = False
        transform = FastBaseTransform()

        def predict(image: np.ndarray):
            height, width = image.shape[:2]
            frame = torch.from_numpy(image).float()
            predictions = net(transform(frame.unsqueeze(0)))
            result = postprocess(predictions, width, height, crop_masks=True, score_threshold=0)
            if result[0].numel() == 0:
                empty = torch.zeros(0)
                return empty.long(), empty, torch.zeros(0, 4).long(), torch.zeros(0, height, width)
            return result

        images = [cv2.imread(path) for path in args.images]
        for k in range(args.warmup):
            predict(images[k % len(images)])
        seconds: List[float] = []
        counts: List[int] = []
        kept = []
        with PeakMemory() as memory:
            for k, image in enumerate(images):
                start = time.perf_counter()
                classes, scores, boxes, masks = predict(image)
                seconds.append(time.perf_counter() - start)
                counts.append(len(classes))
                if k < args.keep:
                    kept.append(_detections(classes, scores, boxes, masks))
    return {
        "seconds": seconds,
        "num_detections": counts,
        "detections": kept,
        "peak_rss_mb": memory.rss_mb,
        "max_size": cfg.max_size,
        "pred_scales": [[float(s) for s in level] for level in cfg.backbone.pred_scales],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Times the original YOLACT (see module doc).")
    parser.add_argument("--repo", required=True)
    parser.add_argument("--config", required=True, help="the original's config name")
    parser.add_argument("--overrides", default="{}", help="JSON dict of config values to set")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--keep", type=int, default=10, help="images whose detections are kept")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    result = run(args)
    with open(args.output, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
