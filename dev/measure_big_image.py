#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Peak memory of one DefaultPredictor (YolactPredictor) call on a huge image with 100 detections:
calibrated random R50 weights (as the deployment parity tests make them), a tiny_coco photo
upscaled to SIDE x SIDE. Prints the detections, what pred_masks holds, the peak RSS and the time.

    .venv/bin/python dev/measure_big_image.py [--side 8000] [--max-dense-mask-bytes 1073741824]
"""

import argparse
import glob
import os
import resource
import sys
import time

import cv2
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from yolact_d2.data.datasets import tiny_coco_root  # noqa: E402
from yolact_d2.engine import YolactPredictor  # noqa: E402
from yolact_d2.utils.cpu import cpu_flags_summary  # noqa: E402

from common import calibrate_detections, get_config  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--max-dense-mask-bytes", type=int, default=2**30)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    opts = ["MODEL.YOLACT.TEST.MAX_DENSE_MASK_BYTES", args.max_dense_mask_bytes]
    predictor = YolactPredictor(get_config("yolact_R_50_FPN_550.yaml", opts))
    root = tiny_coco_root()
    train = sorted(glob.glob(os.path.join(root, "train2017", "*.jpg")))[:8]
    calibrate_detections(predictor.model, [cv2.imread(f)[:, :, ::-1].copy() for f in train])
    photo = cv2.imread(sorted(glob.glob(os.path.join(root, "val2017", "*.jpg")))[0])
    small = predictor(cv2.resize(photo, (640, 480)))["instances"]
    print(f"CPU: {cpu_flags_summary()}")
    print(f"640x480: {len(small)} detections, peak RSS so far {peak_rss_mib():.0f} MiB")
    image = cv2.resize(photo, (args.side, args.side))
    start = time.perf_counter()
    instances = predictor(image)["instances"]
    seconds = time.perf_counter() - start
    masks = instances.pred_masks
    held = masks.nbytes if hasattr(masks, "nbytes") else masks.numel() * masks.element_size()
    print(
        f"{args.side}x{args.side}: {len(instances)} detections, pred_masks "
        f"{type(masks).__name__} holding {held / 2**20:.1f} MiB, peak RSS {peak_rss_mib():.0f} "
        f"MiB, {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
