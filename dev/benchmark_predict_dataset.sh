#!/usr/bin/env bash
# tools/predict_dataset.py (Ray Data) against tools/demo.py's loop on tiny_coco's 100 images
# (train2017 + val2017), at equal threads: 1 worker x 1 thread against the demo on 1 thread, and
# 2 workers x 1 thread against the demo on 2 threads. Prints images/s of each, the tool's
# overhead, Ray's start-up (apart), each worker's start-up and peak RSS, the demo's peak RSS, and
# whether the tool's json is the demo's byte for byte.
#
# The model: configs/demo/yolact_R_18_synthetic.yaml with seeded random weights (BatchNorm
# statistics of one image, so that scores are not all tied), saved once so that the demo and
# every worker load the same weights ("MODEL.WEIGHTS ''" would give each process other ones).
# Each measurement runs in its own process; the tool is called as tools/predict_dataset.py's
# main() with its Ray start and its prediction timed from outside. Takes a few minutes on 2 cores:
# run it on an otherwise idle machine.
#
#   bash dev/benchmark_predict_dataset.sh [SHARD_SIZE]     (default 10: 10 shards of 10 images)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
SHARD_SIZE="${1:-10}"
OUT="$ROOT/output/benchmark_predict_dataset"
TINY_COCO="${YOLACT_D2_TINY_COCO:-$ROOT/datasets/tiny_coco}"
CONFIG=configs/demo/yolact_R_18_synthetic.yaml
rm -rf "$OUT" && mkdir -p "$OUT"
export OUT TINY_COCO CONFIG SHARD_SIZE
export OMP_WAIT_POLICY=PASSIVE

cat > "$OUT/bench.py" <<'EOF'
import yolact_d2  # noqa: F401  isort:skip
import importlib.util
import json
import os
import resource
import sys
import time

import cv2
import torch

OUT, TINY, CONFIG = os.environ["OUT"], os.environ["TINY_COCO"], os.environ["CONFIG"]
WEIGHTS = os.path.join(OUT, "r18_random.pth")
INPUTS = [os.path.join(TINY, "train2017"), os.path.join(TINY, "val2017")]
OPTS = ["MODEL.WEIGHTS", WEIGHTS, "MODEL.DEVICE", "cpu"]
# When the shell started this process: its wall time includes Python's start and the imports.
STARTED = float(os.environ.get("STARTED", time.time()))


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join("tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(row):
    with open(os.path.join(OUT, "results.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def weights():
    from detectron2.modeling import build_model

    from yolact_d2.benchmark.calibration import calibrate_batch_norm
    from yolact_d2.engine.cli import load_config

    torch.manual_seed(0)
    model = build_model(load_config(CONFIG, ["MODEL.DEVICE", "cpu"]))
    image = cv2.imread(os.path.join(TINY, "val2017", "000000006818.jpg"))[:, :, ::-1]
    calibrate_batch_norm(model, cv2.resize(image, (160, 160)))
    torch.save({"model": model.state_dict()}, WEIGHTS)


def demo(threads):
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    module = load("demo")
    timed = {}
    run_images = module.run_images

    def timed_run_images(*args):
        start = time.perf_counter()
        run_images(*args)
        timed["loop"] = time.perf_counter() - start

    module.run_images = timed_run_images
    output = os.path.join(OUT, f"demo_{threads}t.json")
    start = time.perf_counter()
    code = module.main(["--config-file", CONFIG, "--input", *INPUTS, "--output-json", output, *OPTS])
    total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record({"run": f"demo, {threads} thread(s)", "threads": threads, "code": code,
            "loop_s": timed["loop"], "total_s": total, "process_s": time.time() - STARTED,
            "peak_rss_mib": peak, "json": output})


def tool(workers):
    module = load("predict_dataset")
    scale = module._import_scale()
    timed = {}
    start_ray, predict_shards = scale.start_ray, scale.predict_shards

    def timed_start_ray(*args, **kwargs):
        start = time.perf_counter()
        result = start_ray(*args, **kwargs)
        timed["ray_start"] = time.perf_counter() - start
        return result

    def timed_predict_shards(*args, **kwargs):
        timed["begin"] = time.time()
        rows = predict_shards(*args, **kwargs)
        timed["predict"] = time.time() - timed["begin"]
        timed["rows"] = rows
        return rows

    scale.start_ray, scale.predict_shards = timed_start_ray, timed_predict_shards
    output = os.path.join(OUT, f"tool_{workers}w.json")
    start = time.perf_counter()
    code = module.main([
        "--config-file", CONFIG, "--input", *INPUTS, "--output-json", output,
        "--num-workers", str(workers), "--threads-per-worker", "1",
        "--shard-size", os.environ["SHARD_SIZE"], *OPTS,
    ])
    total = time.perf_counter() - start
    rows = timed["rows"]
    window = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    per_worker = {}
    for r in rows:
        w = per_worker.setdefault(r["pid"], {"images": 0, "start": r["start"], "rss": 0.0})
        w["images"] += r["images"]
        w["start"] = min(w["start"], r["start"])
        w["rss"] = max(w["rss"], r["peak_rss_mib"])
    record({"run": f"tool, {workers} worker(s) x 1 thread", "threads": workers, "code": code,
            "ray_start_s": timed["ray_start"], "predict_s": timed["predict"], "window_s": window,
            "total_s": total, "process_s": time.time() - STARTED,
            "workers": [{"images": w["images"], "ready_s": w["start"] - timed["begin"],
                         "peak_rss_mib": w["rss"]} for w in per_worker.values()],
            "json": output})


def report():
    rows = [json.loads(line) for line in open(os.path.join(OUT, "results.jsonl"))]
    demos = {r["threads"]: r for r in rows if r["run"].startswith("demo")}
    from yolact_d2.engine.inference_demo import list_image_files

    images = len(list_image_files(INPUTS))
    print(f"\n{images} images ({TINY}: train2017 + val2017), {CONFIG}, random weights, "
          f"shards of {os.environ['SHARD_SIZE']}, {os.cpu_count()} CPUs")
    for r in rows:
        if r["run"].startswith("demo"):
            print(f"{r['run']:28s} loop {images / r['loop_s']:6.2f} images/s "
                  f"({r['loop_s']:.2f} s); the whole command {r['process_s']:.2f} s; "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB")
    for r in rows:
        if not r["run"].startswith("tool"):
            continue
        d = demos[r["threads"]]
        rate, demo_rate = images / r["window_s"], images / d["loop_s"]
        with open(r["json"], "rb") as f, open(demos[1]["json"], "rb") as g:
            same = f.read() == g.read()
        print(f"{r['run']:28s} {rate:6.2f} images/s from the first shard's start to the last "
              f"one's end ({r['window_s']:.2f} s): overhead {100 * (demo_rate / rate - 1):+.1f}% "
              f"against the demo on {r['threads']} thread(s)")
        alone = r["process_s"] - r["ray_start_s"]
        print(f"{'':28s} Ray start-up {r['ray_start_s']:.2f} s (apart); the whole command "
              f"{r['process_s']:.2f} s, {alone:.2f} s without Ray's start-up against the demo's "
              f"{d['process_s']:.2f} s ({100 * (alone / d['process_s'] - 1):+.1f}%)")
        for w in r["workers"]:
            print(f"{'':28s} worker: {w['images']} images, ready after {w['ready_s']:.2f} s "
                  f"(process, imports, model), peak RSS {w['peak_rss_mib']:.0f} MiB")
        print(f"{'':28s} json byte-identical to the demo's (1 thread): {same}; exit code "
              f"{r['code']}")


if __name__ == "__main__":
    if sys.argv[1] == "weights":
        weights()
    elif sys.argv[1] == "report":
        report()
    else:
        {"demo": demo, "tool": tool}[sys.argv[1]](int(sys.argv[2]))
EOF

echo "[benchmark] load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" "$OUT/bench.py" weights
for threads in 1 2; do
  echo "[benchmark] demo, $threads thread(s)"
  STARTED=$(date +%s.%N) OMP_NUM_THREADS=$threads "$PY" "$OUT/bench.py" demo "$threads" > "$OUT/demo_${threads}t.log" 2>&1
  echo "[benchmark] tool, $threads worker(s) x 1 thread"
  STARTED=$(date +%s.%N) "$PY" "$OUT/bench.py" tool "$threads" > "$OUT/tool_${threads}w.log" 2>&1
done
"$PY" "$OUT/bench.py" report | tee "$OUT/report.txt"
echo "[benchmark] load average: $(cut -d' ' -f1-3 /proc/loadavg)"
