#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
r"""
Run a trained YOLACT over a large image collection on Ray Data and write its detections as one
COCO results json (and optionally Parquet); the same command runs on one machine or a cluster.

Examples (CFG and W: a config and its weights; inputs as tools/demo.py takes them):

    # a folder on this machine, 2 workers of 1 thread each (Ray starts here)
    python tools/predict_dataset.py --config-file CFG --input examples/images \
        --output-json output/examples.json --num-workers 2 MODEL.WEIGHTS W
    # a registered dataset (its image and category ids), Parquet as well
    python tools/predict_dataset.py --config-file CFG --dataset coco_2017_val \
        --output-json output/val.json --parquet output/val.parquet --num-workers 2 \
        MODEL.WEIGHTS W
    # on a running Ray cluster (ray start --head ...), an exported model, list files
    python tools/predict_dataset.py --config-file CFG --input /shared/images.txt \
        --output-json /shared/out/images.json --num-workers 16 --ray-address auto \
        --model /shared/export/model.onnx

Inputs are image files, folders (searched recursively), globs, and .txt files listing one
image path per line; images and image ids follow tools/demo.py (the number of a COCO-style file
name, else the position in the input list; --dataset: the dataset's ids), and the json holds
what "tools/demo.py --output-json" writes for the same images, in the same order.

The list is cut into shards of --shard-size images; each shard's results are written to
--shard-dir (default: beside the json, "<json name>.shards/") when it is done, and the json is
merged from them at the end. A rerun of the same command predicts only the shards whose file is
missing (a changed config, weights file, model or input list gives new shard names). On a
cluster, the inputs, --shard-dir and the outputs must be paths every node can read and write
(a shared file system).

Config overrides (KEY VALUE ...) follow the options, bare or after --opts. Exit code 1 if some
inputs do not exist or could not be read (they are listed and skipped, the rest is processed),
2 for a missing config, weights file, model, output directory or Ray, or no image at all.
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import logging
import os
import sys
import time

import tqdm

from detectron2.utils.logger import setup_logger

from yolact_d2.checkpoint.checkpointer import WeightsError
from yolact_d2.engine.cli import check_output_directory, load_config, tool_parser
from yolact_d2.engine.inference_demo import (
    DemoInputError,
    coco_style_id,
    list_image_files,
    metadata_of,
)

# An exported model's runtime, by file name ending (--runtime chooses another).
RUNTIME_OF = {".onnx": "onnxruntime", ".xml": "openvino", ".pt2": "pytorch"}


def get_parser():
    parser = tool_parser(__doc__)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--input", nargs="+", help="image files, globs, folders, or .txt lists of image paths"
    )
    source.add_argument("--dataset", help="a registered dataset's images (and its ids)")
    parser.add_argument(
        "--output-json", required=True, metavar="FILE", help="write detections (COCO results)"
    )
    parser.add_argument(
        "--parquet", metavar="FILE", help="also write them as Parquet (one row per detection)"
    )
    parser.add_argument("--num-workers", type=int, default=1, help="predictor actors")
    parser.add_argument(
        "--threads-per-worker", type=int, default=1, help="CPUs and intra-op threads per actor"
    )
    parser.add_argument(
        "--gpus-per-worker",
        type=float,
        help="GPUs per actor (default: 1 when MODEL.DEVICE is cuda, else 0)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    parser.add_argument(
        "--shard-size", type=int, default=64, help="images per shard file (resumed as a unit)"
    )
    parser.add_argument("--shard-dir", metavar="DIR", help="default: <output json>.shards/")
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help='a running Ray cluster ("auto", "HOST:6379", "ray://HOST:10001"); '
        "default: start Ray on this machine",
    )
    parser.add_argument(
        "--model", metavar="FILE", help="an exported .onnx / .xml / .pt2 to run instead"
    )
    parser.add_argument(
        "--runtime",
        help="the exported model's runtime (default: onnxruntime for .onnx, openvino for .xml, "
        "pytorch for .pt2)",
    )
    parser.add_argument("--polygons", action="store_true", help="add masks as polygons")
    return parser


def _check_arguments(args) -> None:
    if not (args.input or args.dataset):
        raise DemoInputError("nothing to run on: give --input or --dataset")
    for name in ("num_workers", "threads_per_worker", "batch_size", "shard_size"):
        if getattr(args, name) < 1:
            option = "--" + name.replace("_", "-")
            raise DemoInputError(f"{option} must be at least 1, got {getattr(args, name)}")
    check_output_directory(args.output_json, "--output-json")
    if args.parquet:
        check_output_directory(args.parquet, "--parquet")
    if args.model:
        ending = os.path.splitext(args.model)[1]
        if ending not in RUNTIME_OF:
            raise DemoInputError(f"--model {args.model!r}: not an .onnx, .xml or .pt2 file")
        if not os.path.isfile(args.model):
            raise DemoInputError(f"--model {args.model!r} does not exist")


def _expand_lists(inputs):
    """Inputs with each existing .txt file replaced by the paths it lists (one a line, blank
    lines and # comments left out; relative paths are relative to the list's folder)."""
    expanded = []
    for item in inputs:
        if item.lower().endswith(".txt") and os.path.isfile(item):
            folder = os.path.dirname(item)
            with open(item) as f:
                lines = [line.strip() for line in f]
            expanded += [
                os.path.join(folder, line) for line in lines if line and not line.startswith("#")
            ]
        else:
            expanded.append(item)
    return expanded


def list_entries(args, logger):
    """
    (image id, path, shown name) of every image, in input order, and the inputs that do not
    exist; paths are absolute (workers on other machines or folders read them).
    """
    if args.dataset:
        from detectron2.data import DatasetCatalog

        if args.dataset not in DatasetCatalog.list():
            raise DemoInputError(f"dataset {args.dataset!r} is not registered")
        records = DatasetCatalog.get(args.dataset)
        return [(r["image_id"], os.path.abspath(r["file_name"])) for r in records], []
    missing = []
    files = list_image_files(_expand_lists(args.input), missing)
    if not files:
        what = f"input {missing[0]!r} does not exist" if len(missing) == 1 else "no images"
        raise DemoInputError(f"{what} (--input {' '.join(args.input)})")
    for item in missing:
        logger.warning(f"input {item!r} does not exist, skipped")
    entries = [(coco_style_id(path, i), os.path.abspath(path)) for i, path in enumerate(files)]
    return entries, missing


def _import_scale():
    try:
        import ray  # noqa: F401

        from yolact_d2 import scale
    except ImportError as e:
        raise DemoInputError(
            f'Ray is not installed ({e}): pip install -e ".[scale]" (or bash dev/setup_env.sh)'
        ) from e
    return scale


def _check_model(cfg, model: str, runtime: str) -> None:
    """
    Loads the model once in this process, so that weights or an export that cannot be loaded
    are one error line here rather than a failure of every worker after Ray has started.
    """
    if model:
        from yolact_d2.deploy import ExportedPredictor

        try:
            ExportedPredictor(model, runtime)
        except (ValueError, ImportError) as e:
            raise DemoInputError(f"--model {model!r}: {e}") from e
    else:
        from yolact_d2.engine import YolactPredictor

        on_cpu = cfg.clone()
        on_cpu.defrost()
        on_cpu.MODEL.DEVICE = "cpu"  # the workers may have a GPU where this machine has none
        YolactPredictor(on_cpu)


def _check_resources(workers: int, threads: int, gpus: float, logger) -> None:
    """Warns when the Ray cluster has fewer CPUs or GPUs than the workers ask for (they would
    wait for them: an autoscaling cluster adds nodes, another one never runs them)."""
    import ray

    available = ray.cluster_resources()
    for what, needed in (("CPU", workers * threads), ("GPU", workers * gpus)):
        if needed > available.get(what, 0):
            logger.warning(
                f"{workers} worker(s) need {needed:g} {what}s, the Ray cluster has "
                f"{available.get(what, 0):g}: some workers wait until it has them"
            )


def _report_workers(rows, begin: float, logger) -> None:
    workers = {}
    for row in rows:
        worker = workers.setdefault((row["host"], row["pid"]), dict(row, shards=0, images=0))
        worker["shards"] += 1
        worker["images"] += row["images"]
        worker["start"] = min(worker["start"], row["start"])
        worker["peak_rss_mib"] = max(worker["peak_rss_mib"], row["peak_rss_mib"])
    for (host, pid), w in sorted(workers.items()):
        logger.info(
            f"worker {host}:{pid}: {w['shards']} shards, {w['images']} images; ready "
            f"{w['start'] - begin:.2f} s after the start (model built in {w['init_seconds']:.2f}"
            f" s), peak RSS {w['peak_rss_mib']:.0f} MiB"
        )


def run(args, cfg, logger) -> int:
    """Lists, shards, predicts and merges; returns the exit code (1 if inputs failed)."""
    scale = _import_scale()
    entries, missing = list_entries(args, logger)
    metadata = metadata_of(cfg, args.dataset)
    category_map = metadata.get("thing_dataset_id_to_contiguous_id", None)
    runtime = None
    if args.model:
        runtime = args.runtime or RUNTIME_OF[os.path.splitext(args.model)[1]]
    fingerprint = scale.run_fingerprint(cfg, args.model, runtime, args.polygons, category_map)
    shards = scale.plan_shards(entries, args.shard_size, fingerprint)
    shard_dir = os.path.abspath(args.shard_dir or os.path.splitext(args.output_json)[0] + ".shards")
    os.makedirs(shard_dir, exist_ok=True)
    todo = [s for s in shards if not os.path.isfile(os.path.join(shard_dir, s.name))]
    todo_images = sum(len(s.entries) for s in todo)
    names = {s.name for s in shards}
    others = [n for n in os.listdir(shard_dir) if n.startswith("shard-") and n not in names]
    if others:
        logger.info(f"{len(others)} shard files of other inputs or settings in {shard_dir} unused")
    logger.info(
        f"{len(entries)} images in {len(shards)} shards of up to {args.shard_size}: "
        f"{len(todo)} shards ({todo_images} images) to predict, "
        f"{len(shards) - len(todo)} already written in {shard_dir}"
    )
    rows = []
    if todo:
        _check_model(cfg, args.model, runtime)
        started, seconds = scale.start_ray(
            args.ray_address,
            num_cpus=max(os.cpu_count() or 1, args.num_workers * args.threads_per_worker),
        )
        if started:
            where = f"connected to {args.ray_address}" if args.ray_address else "started"
            logger.info(f"Ray {where} in {seconds:.2f} s")
        gpus = args.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if cfg.MODEL.DEVICE.startswith("cuda") else 0.0
        _check_resources(args.num_workers, args.threads_per_worker, gpus, logger)
        predictor_kwargs = {
            "cfg": cfg,
            "model": os.path.abspath(args.model) if args.model else None,
            "runtime": runtime,
            "batch_size": args.batch_size,
            "polygons": args.polygons,
            "category_map": category_map,
        }
        bar = tqdm.tqdm(total=todo_images, unit="img", dynamic_ncols=True)
        start = time.time()
        try:
            rows = scale.predict_shards(
                todo,
                shard_dir,
                predictor_kwargs,
                args.num_workers,
                threads=args.threads_per_worker,
                gpus=gpus,
                on_shard=lambda row: bar.update(row["images"]),
            )
        finally:
            bar.close()
            if started:
                import ray

                ray.shutdown()
        seconds = time.time() - start
        window = max(r["end"] for r in rows) - min(r["start"] for r in rows)
        logger.info(
            f"{todo_images} images predicted in {seconds:.2f} s with {args.num_workers} "
            f"worker(s) of {args.threads_per_worker} thread(s): {todo_images / seconds:.2f} "
            f"images/s with the workers' start-up, {todo_images / window:.2f} images/s from the "
            "first shard's start to the last one's end"
        )
        _report_workers(rows, start, logger)
    summary = scale.merge_shards(shards, shard_dir, args.output_json, args.parquet)
    written = f"{args.output_json}" + (f" and {args.parquet}" if args.parquet else "")
    logger.info(f"{summary.detections} detections of {summary.images} images written to {written}")
    failed = missing + summary.failed
    if failed:
        print(f"{len(failed)} input(s) failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logger = setup_logger(name="yolact_d2")
    logging.getLogger("fvcore").setLevel(logging.WARNING)
    try:
        # Workers on a cluster may have the GPUs this machine lacks: no CPU fallback there.
        cfg = load_config(args.config_file, args.opts, cpu_fallback=not args.ray_address)
        weights = cfg.MODEL.WEIGHTS
        if weights and "://" not in weights:  # the workers' working directory may be another
            cfg.MODEL.WEIGHTS = os.path.abspath(weights)
        cfg.freeze()
        _check_arguments(args)
        return run(args, cfg, logger)
    except (DemoInputError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
