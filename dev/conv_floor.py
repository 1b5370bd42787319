#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
The convolution throughput this CPU reaches, per precision: one large 3x3 convolution (256 -> 256
channels on a 69 x 69 map, YOLACT R50-550's P3 level) timed alone on THREADS threads, in PyTorch
fp32 and bf16 (oneDNN) and in OpenVINO f32 and int8 (the convolution exported to ONNX and
quantised by NNCF, as tools/quantize.py does the model). Prints GFLOP/s (2 x multiply-adds), the
"floor" of docs/BENCHMARKS.md: a model's convolution GFLOP divided by these is the least time its
convolutions can take here.

    python dev/conv_floor.py [THREADS]
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import numpy as np
import os
import sys
import tempfile
import time

import torch

from yolact_d2.utils.cpu import cpu_flags_summary

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
CHANNELS, SIDE, REPEATS = 256, 69, 50
GFLOP = 2 * CHANNELS * CHANNELS * 9 * SIDE * SIDE / 1e9


def rate(call) -> float:
    for _ in range(5):
        call()
    start = time.perf_counter()
    for _ in range(REPEATS):
        call()
    return GFLOP * REPEATS / (time.perf_counter() - start)


def main():
    torch.set_num_threads(THREADS)
    conv = torch.nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1).eval()
    x = torch.randn(1, CHANNELS, SIDE, SIDE)
    print(f"CPU: {cpu_flags_summary()}; {THREADS} threads; {GFLOP:.2f} GFLOP per call")
    with torch.no_grad():
        print(f"pytorch fp32: {rate(lambda: conv(x)):.0f} GFLOP/s")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cl = x.contiguous(memory_format=torch.channels_last)
            print(f"pytorch bf16: {rate(lambda: conv(cl)):.0f} GFLOP/s")
    import nncf
    import openvino

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "conv.onnx")
        torch.onnx.export(conv, (x,), path, input_names=["x"], dynamo=True)
        core = openvino.Core()
        model = core.read_model(path)
        data = [np.random.default_rng(i).standard_normal(x.shape, np.float32) for i in range(8)]
        int8 = nncf.quantize(model, nncf.Dataset(data), subset_size=len(data))
        config = {"INFERENCE_NUM_THREADS": str(THREADS), "INFERENCE_PRECISION_HINT": "f32"}
        for label, m in (("openvino f32", model), ("openvino int8", int8)):
            compiled = core.compile_model(m, "CPU", config)
            request = compiled.create_infer_request()
            print(f"{label}: {rate(lambda: request.infer({0: data[0]})):.0f} GFLOP/s")


if __name__ == "__main__":
    main()
