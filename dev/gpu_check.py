#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
The GPU measurements of ``dev/gpu_check.sh``: one table of what YOLACT does on a CUDA GPU.

    python dev/gpu_check.py --output DIR [--num-images 50] [--train-iters 50]

Each section runs on its own (a failure is written into the table and the others go on):

1. inference speed, batch 1, end to end through ``DefaultPredictor`` (BGR image in,
   ``Instances`` at the original size out), CUDA synchronised, warm-up excluded, on tiny_coco's
   COCO-sized validation images: YOLACT R50-550 and R101-550 (random weights calibrated to
   detect like trained ones, as ``tools/benchmark.py --calibrate``) and Detectron2's Mask R-CNN
   R50-FPN 1x with a trained model's workload (``::full_workload``), in fp32 and float16
   autocast (AMP); images/s, "x Mask R-CNN" (the paper: 3.9x) and peak GPU memory;
2. Fast NMS on CUDA against torchvision's ``batched_nms`` on the same candidates (the R50
   model's on real images);
3. exactness: the same R50 weights on CUDA and on the CPU (detections matched one to one:
   class, score within 1e-3, box within 1 px; mask IoU of the matches), and AMP against fp32;
4. training: R50-550 at batch 8 with AMP (``SOLVER.AMP.ENABLED``) on tiny_coco for
   ``--train-iters`` iterations: iterations/s after the first 10, loss finite and falling,
   peak GPU memory.

Writes ``gpu_check.md`` (the table) and ``gpu_check.json`` to ``--output``; exit code 1 if a
section failed.
"""

import argparse
import json
import logging
import numpy as np
import os
import platform
import sys
import tempfile
import time
import traceback

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from detectron2.engine import hooks  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import yolact_d2  # noqa: E402,F401
from yolact_d2.benchmark import BenchmarkSettings, dataset_image_files, load_images  # noqa: E402
from yolact_d2.benchmark.calibration import calibrate_detections  # noqa: E402
from yolact_d2.benchmark.nms_benchmark import benchmark_nms, model_candidate_sets  # noqa: E402
from yolact_d2.benchmark.predictor import build_predictor  # noqa: E402
from yolact_d2.benchmark.runner import time_end_to_end  # noqa: E402
from yolact_d2.evaluation.mask_agreement import MaskAgreement  # noqa: E402

logger = logging.getLogger("gpu_check")

YOLACT_CONFIGS = ("yolact_R_50_FPN_550.yaml", "yolact_R_101_FPN_550.yaml")
MASK_RCNN = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml::full_workload"
PRECISIONS = ("fp32", "fp16")


def _calibrated_predictor(name, precision, images, state=None):
    """A YOLACT predictor on CUDA with seeded random weights calibrated on ``images`` (or the
    given state dict), so that it detects like a trained model."""
    predictor = build_predictor(name, precision, device="cuda")
    if state is None:
        rgb = [im[:, :, ::-1].copy() for im in images[:8]]
        calibrate_detections(predictor.model, rgb)
        state = {k: v.detach().clone() for k, v in predictor.model.state_dict().items()}
    else:
        predictor.model.load_state_dict(state)
    return predictor, state


def inference_speed(images, args, results):
    """Section 1: images/s of each model and precision; returns the first YOLACT's weights."""
    settings = BenchmarkSettings(device="cuda", warmup=args.warmup, stages=False, flops=False)
    states = {}
    rows = []
    for name in list(args.yolact_configs) + [MASK_RCNN]:
        for precision in args.precisions:
            label = f"{name.split('/')[-1].replace('.yaml', '')} {precision}"
            try:
                if name in args.yolact_configs:
                    predictor, states[name] = _calibrated_predictor(
                        name, precision, images, states.get(name)
                    )
                else:
                    predictor = build_predictor(name, precision, device="cuda")
                torch.cuda.reset_peak_memory_stats()
                stats = time_end_to_end(predictor, images, settings, label)
                rows.append({"model": label, **stats})
                del predictor
                torch.cuda.empty_cache()
            except Exception as e:  # noqa: BLE001 (recorded, the other rows go on)
                rows.append({"model": label, "error": _error(e)})
    mask_rcnn = {r["model"].split()[-1]: r for r in rows if "mask_rcnn" in r["model"]}
    for row in rows:
        reference = mask_rcnn.get(row["model"].split()[-1], {})
        if "images_per_s" in row and "images_per_s" in reference:
            row["x_mask_rcnn"] = row["images_per_s"] / reference["images_per_s"]
    results["inference"] = rows
    return states.get(args.yolact_configs[0])


def nms_speed(images, state, results):
    """Section 2: Fast NMS on CUDA vs torchvision's batched NMS on the same candidates."""
    predictor, _ = _calibrated_predictor(YOLACT_CONFIGS[0], "fp32", images, state)
    sets = [s.to("cuda") for s in model_candidate_sets(predictor, images[:10])]
    rows = benchmark_nms(
        sets, repeats=20, methods={"Fast NMS (CUDA)": "fast", "torchvision batched_nms": "batched"}
    )
    results["nms"] = rows


def exactness(images, state, precisions, results):
    """Section 3: CUDA fp32 vs CPU fp32, and CUDA fp16 vs CUDA fp32 (when fp16 is measured), on
    the same weights."""
    cuda, state = _calibrated_predictor(YOLACT_CONFIGS[0], "fp32", images, state)
    cpu = build_predictor(YOLACT_CONFIGS[0], "fp32", device="cpu")
    cpu.model.load_state_dict({k: v.cpu() for k, v in state.items()})
    comparisons = [
        ("CUDA fp32 vs CPU fp32", cpu, MaskAgreement(score_tolerance=1e-3, box_tolerance=1.0))
    ]
    if "fp16" in precisions:
        amp, _ = _calibrated_predictor(YOLACT_CONFIGS[0], "fp16", images, state)
        comparisons.append(("CUDA fp16 vs CUDA fp32", amp, MaskAgreement()))
    rows = []
    for image in images[:10]:
        on_gpu = cuda(image)["instances"]
        for label, other, agreement in comparisons:
            if other is cpu:  # CPU is the reference
                agreement.add(other(image)["instances"], on_gpu)
            else:
                agreement.add(on_gpu, other(image)["instances"])
    for label, _, agreement in comparisons:
        rows.append(
            {
                "comparison": label,
                "reference_detections": agreement.num_reference,
                "other_detections": agreement.num_other,
                "one_to_one": agreement.one_to_one_fraction,
                "mean_mask_iou": agreement.mean_iou,
                "min_mask_iou": float(np.min(agreement.ious)) if agreement.ious else float("nan"),
            }
        )
    results["exactness"] = rows


class _IterationClock(hooks.HookBase):
    """Wall time of each training iteration, CUDA synchronised."""

    def __init__(self):
        self.seconds = []

    def before_step(self):
        torch.cuda.synchronize()
        self._start = time.perf_counter()

    def after_step(self):
        torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self._start)


def training(args, results):
    """Section 4: R50-550, batch 8, AMP, on tiny_coco."""
    from yolact_d2.engine import YolactTrainer
    from yolact_d2.engine.cli import load_config

    with tempfile.TemporaryDirectory() as output_dir:
        cfg = load_config(
            os.path.join(REPO_ROOT, "configs", "yolact_R_50_FPN_550.yaml"),
            [
                "MODEL.WEIGHTS", "",
                "MODEL.DEVICE", "cuda",
                "MODEL.YOLACT.FREEZE_BN_BELOW_BATCH", 0,
                "MODEL.YOLACT.PRETRAINED_RECIPE", False,
                "DATASETS.TRAIN", ("tiny_coco_train",),
                "DATASETS.TEST", (),
                "MODEL.YOLACT.INPUT_SIZE", args.train_input_size,
                "SOLVER.IMS_PER_BATCH", args.train_batch,
                "SOLVER.MAX_ITER", args.train_iters,
                "SOLVER.STEPS", (),
                "SOLVER.WARMUP_ITERS", 10,
                "SOLVER.AMP.ENABLED", True,
                "SOLVER.CHECKPOINT_PERIOD", 10**6,
                "SOLVER.LOG_PERIOD", 1,
                "DATALOADER.NUM_WORKERS", 4,
                "OUTPUT_DIR", output_dir,
            ],
        )  # fmt: skip
        torch.cuda.reset_peak_memory_stats()
        trainer = YolactTrainer(cfg)
        clock = _IterationClock()
        trainer.register_hooks([clock])
        trainer.resume_or_load(resume=False)
        trainer.train()
        losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    steady = clock.seconds[10:] or clock.seconds
    results["training"] = [
        {
            "model": f"yolact_R_50_FPN {args.train_input_size}, batch {args.train_batch}, AMP",
            "iterations": len(clock.seconds),
            "iterations_per_s": len(steady) / sum(steady),
            "images_per_s": args.train_batch * len(steady) / sum(steady),
            "loss_first_10": float(np.mean(losses[:10])),
            "loss_last_10": float(np.mean(losses[-10:])),
            "all_finite": bool(np.all(np.isfinite(losses))),
            "falling": bool(np.mean(losses[-10:]) < np.mean(losses[:10])),
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20,
        }
    ]


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown(results) -> str:
    lines = [
        f"# GPU check: {results['gpu']}",
        "",
        f"torch {results['torch']}, CUDA {results['cuda']}, numpy {results['numpy']}, "
        f"Python {results['python']}; {results['num_images']} tiny_coco val images.",
    ]
    columns = {
        "inference": ["model", "images_per_s", "median_ms", "p90_ms", "x_mask_rcnn",
                      "detections_per_image", "peak_cuda_mb", "first_call_s", "error"],
        "nms": ["method", "median_ms", "p90_ms", "kept_per_image", "differing_pct",
                "time_vs_fast", "candidates_per_image"],
        "exactness": ["comparison", "reference_detections", "other_detections", "one_to_one",
                      "mean_mask_iou", "min_mask_iou"],
        "training": ["model", "iterations", "iterations_per_s", "images_per_s",
                     "loss_first_10", "loss_last_10", "all_finite", "falling", "peak_cuda_mb"],
    }  # fmt: skip
    for section, names in columns.items():
        lines += ["", f"## {section}", ""]
        value = results.get(section)
        if isinstance(value, str):
            lines.append(f"FAILED: {value}")
            continue
        rows = value or []
        names = [n for n in names if any(n in r for r in rows)]
        lines.append("| " + " | ".join(names) + " |")
        lines.append("|" + "---|" * len(names))
        for row in rows:
            lines.append("| " + " | ".join(_fmt(row.get(n, "")) for n in names) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--output", required=True)
    parser.add_argument("--num-images", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per row")
    parser.add_argument("--yolact-configs", nargs="+", default=list(YOLACT_CONFIGS))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS))
    parser.add_argument("--train-iters", type=int, default=50)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-input-size", type=int, default=550)
    args = parser.parse_args()
    setup_logger(name="yolact_d2")
    setup_logger(name="gpu_check")
    if not torch.cuda.is_available():
        print("error: no CUDA GPU here; dev/gpu_check.py runs on a GPU machine", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = False
    results = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "num_images": args.num_images,
    }
    images = load_images(dataset_image_files("tiny_coco_val", args.num_images))
    sections = [
        ("inference", lambda: results.update(r50=inference_speed(images, args, results))),
        ("nms", lambda: nms_speed(images, results.get("r50"), results)),
        ("exactness", lambda: exactness(images, results.get("r50"), args.precisions, results)),
        ("training", lambda: training(args, results)),
    ]
    failed = False
    for name, run in sections:
        start = time.perf_counter()
        try:
            run()
        except Exception as e:  # noqa: BLE001 (recorded, the other sections go on)
            traceback.print_exc()
            results[name] = _error(e)
            failed = True
        logger.info(f"section {name}: {time.perf_counter() - start:.1f} s")
    results.pop("r50", None)
    failed = failed or any("error" in r for r in results.get("inference", []))
    os.makedirs(args.output, exist_ok=True)
    table = markdown(results)
    with open(os.path.join(args.output, "gpu_check.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.output, "gpu_check.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
