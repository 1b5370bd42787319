#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Where the exported graph should stop: masks at prototype resolution pasted by the predictor
(what tools/export_model.py exports), or pasted inside the graph (bilinear Resize to the image,
threshold, D x H x W bool out). Exports both forms of one calibrated-random R50 model, runs them on
onnxruntime on tiny_coco val images, and prints time per image and output bytes.

    .venv/bin/python dev/measure_mask_paste.py [--images 10]
"""

import argparse
import glob
import numpy as np
import os
import sys
import tempfile
import time

import cv2
import onnx
import onnxruntime
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from yolact_d2.data.datasets import tiny_coco_root  # noqa: E402
from yolact_d2.deploy import ExportedPredictor, YolactInferenceGraph, export_model  # noqa: E402
from yolact_d2.deploy.export import _sample_image, program_to_onnx  # noqa: E402
from yolact_d2.utils.cpu import cpu_flags_summary  # noqa: E402

from common import calibrate_detections, get_config, get_model  # noqa: E402


class PastedGraph(YolactInferenceGraph):
    """The same graph with the paste step inside: (D, H, W) bool masks."""

    def forward(self, image):
        boxes, scores, classes, masks = super().forward(image)
        size = (image.shape[0], image.shape[1])
        pasted = F.interpolate(masks[None], size=size, mode="bilinear", align_corners=False)[0]
        return boxes, scores, classes, pasted > self.model.postprocess_settings.mask_threshold


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = "yolact_R_50_FPN_550.yaml"
    files = sorted(glob.glob(os.path.join(tiny_coco_root(), "val2017", "*.jpg")))
    train = sorted(glob.glob(os.path.join(tiny_coco_root(), "train2017", "*.jpg")))[:8]
    model = get_model(config)
    calibrate_detections(model, [cv2.imread(f)[:, :, ::-1].copy() for f in train])
    images = [cv2.imread(f) for f in files[: args.images]]
    out = tempfile.mkdtemp()
    prototype_path = export_model(get_config(config), model, "onnx", out)
    height, width = torch.export.Dim("height", min=2), torch.export.Dim("width", min=2)
    program = torch.export.export(
        PastedGraph(model),
        (_sample_image(None),),
        dynamic_shapes={"image": {0: height, 1: width}},
        strict=False,
    )
    pasted_path = os.path.join(out, "pasted.onnx")
    onnx.save(program_to_onnx(program, 18, ["image"], ["b", "s", "c", "m"]), pasted_path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    pasted = onnxruntime.InferenceSession(pasted_path, options, providers=["CPUExecutionProvider"])
    predictor = ExportedPredictor(prototype_path, num_threads=2)
    rows = {"prototype masks + predictor paste": [], "paste in the graph": []}
    sizes = {k: [] for k in rows}
    for bgr in images[:2]:  # warm-up
        predictor(bgr), pasted.run(None, {"image": bgr[:, :, ::-1].copy()})
    for bgr in images:
        rgb = bgr[:, :, ::-1].copy()
        start = time.perf_counter()
        predictor(bgr)  # the graph, then the paste
        rows["prototype masks + predictor paste"].append(time.perf_counter() - start)
        sizes["prototype masks + predictor paste"].append(predictor.run(rgb)["masks"].nbytes)
        start = time.perf_counter()
        masks = pasted.run(None, {"image": rgb})[3]
        rows["paste in the graph"].append(time.perf_counter() - start)
        sizes["paste in the graph"].append(masks.nbytes)
    print(f"{len(images)} tiny_coco val images, onnxruntime, 2 threads, CPU: {cpu_flags_summary()}")
    print("| form | median ms / image | mask output MB / image |")
    print("|---|---|---|")
    for name in rows:
        ms, mb = 1000 * np.median(rows[name]), np.median(sizes[name]) / 2**20
        print(f"| {name} | {ms:.1f} | {mb:.1f} |")


if __name__ == "__main__":
    main()
