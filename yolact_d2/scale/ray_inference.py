# Copyright (c) yolact_d2 contributors.
"""
What ``tools/predict_dataset.py`` does: a YOLACT over a large image collection on Ray Data, in
resumable shards merged into one COCO results json (and optionally Parquet).

The driver lists the images and their ids as the demo does and cuts the list, in input order,
into shards of ``shard_size`` images (:func:`plan_shards`). The shards whose file is not written
yet go through ``Dataset.map_batches`` to an actor pool of :class:`ShardPredictor` (one actor per
worker, each holding one predictor): an actor reads its shard's images, predicts them in batches
with the demo's code (:class:`~yolact_d2.engine.inference_demo.Demo`) and writes the shard's
results atomically. Only a small summary per shard travels back through Ray. The driver then
merges the shard files in shard order (:func:`merge_shards`), so the json is the one
``tools/demo.py --output-json`` writes for the same images, in the same order.
"""

import contextlib
import hashlib
import json
import logging
import os
import resource
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from detectron2.data.catalog import Metadata

from yolact_d2.engine.inference_demo import Demo, read_images
from yolact_d2.utils.file_io import atomic_open

__all__ = [
    "Shard",
    "MergeSummary",
    "run_fingerprint",
    "plan_shards",
    "ShardPredictor",
    "start_ray",
    "predict_shards",
    "merge_shards",
]

logger = logging.getLogger(__name__)

# The per-shard summary an actor returns (the results themselves go to the shard file).
SUMMARY_FIELDS = (
    "name",
    "images",
    "detections",
    "failed",
    "host",
    "pid",
    "peak_rss_mib",
    "init_seconds",
    "start",
    "end",
)


@dataclass(frozen=True)
class Shard:
    """
    A run of consecutive images of the input list and the file their results go to.

    Attributes:
        index (int): the shard's position (shard 0 holds the first ``shard_size`` images).
        entries (tuple): (image id, path) of each image, in input order.
        key (str): a digest of the entries and of the run's settings
            (:func:`run_fingerprint`): a shard file is reused only by the run that wrote it.
    """

    index: int
    entries: Tuple[Tuple[int, str], ...]
    key: str

    @property
    def name(self) -> str:
        """The shard's file name, ``shard-<index>-<key>.json``."""
        return f"shard-{self.index:05d}-{self.key}.json"


@dataclass
class MergeSummary:
    """What the merged shards hold: image and detection counts and the unreadable images."""

    images: int = 0
    detections: int = 0
    failed: List[str] = field(default_factory=list)


def _file_stamp(path: Optional[str]) -> Optional[List]:
    if not path or not os.path.isfile(path):
        return None
    stat = os.stat(path)
    return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def run_fingerprint(
    cfg,
    model: Optional[str] = None,
    runtime: Optional[str] = None,
    polygons: bool = False,
    category_map: Optional[Dict[int, int]] = None,
) -> str:
    """
    A digest of what decides a run's results: the full config, the weights file (path, size and
    modification time), an exported model and its runtime, ``polygons`` and the category ids.
    Changing any of them makes every shard name new, so no result of another run is reused.

    Returns:
        str: a hex digest.
    """
    settings = [
        cfg.dump(),
        _file_stamp(cfg.MODEL.WEIGHTS),
        _file_stamp(model),
        model,
        runtime,
        bool(polygons),
        sorted((int(k), int(v)) for k, v in (category_map or {}).items()),
    ]
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()


def plan_shards(
    entries: Sequence[Tuple[int, str]], shard_size: int, fingerprint: str
) -> List[Shard]:
    """
    Cuts the (image id, path) list, in its order, into shards of ``shard_size`` images (the last
    may be shorter). The same inputs and settings give the same shards, so a rerun finds the
    files of the shards it already wrote.

    Args:
        entries: (image id, path) of every image, in input order.
        shard_size (int): images per shard, at least 1.
        fingerprint (str): :func:`run_fingerprint` of the run.

    Returns:
        list[Shard]
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    shards = []
    for index, start in enumerate(range(0, len(entries), shard_size)):
        chunk = tuple((int(i), str(p)) for i, p in entries[start : start + shard_size])
        key = hashlib.sha256(json.dumps([fingerprint, chunk]).encode()).hexdigest()[:12]
        shards.append(Shard(index, chunk, key))
    return shards


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, else KiB


class _OneByOne:
    """An exported model's predictor (one image per call) called with a list, as the demo's
    batches call :class:`~yolact_d2.engine.YolactPredictor`."""

    def __init__(self, predictor):
        self.predictor = predictor

    def __call__(self, images):
        if isinstance(images, (list, tuple)):
            return [self.predictor(image) for image in images]
        return self.predictor(images)


class ShardPredictor:
    """
    The callable class of the actor pool (``Dataset.map_batches``): one predictor per actor;
    each call predicts whole shards and writes each one's file atomically.

    Each input row is a shard: "name" (its file name) and "entries" (its (image id, path)
    pairs as json). Each output row is its summary (:data:`SUMMARY_FIELDS`): image and detection
    counts, the unreadable images (json), the worker's host, pid and peak RSS, how long the
    worker took to start (model built), and when the shard started and ended.
    """

    def __init__(
        self,
        cfg,
        shard_dir: str,
        model: Optional[str] = None,
        runtime: Optional[str] = None,
        threads: int = 1,
        batch_size: int = 1,
        polygons: bool = False,
        category_map: Optional[Dict[int, int]] = None,
    ):
        """
        Args:
            cfg (CfgNode): the run's config (the model and its weights, unless ``model``).
            shard_dir (str): where shard files are written (storage every worker can write).
            model (str or None): an exported .onnx / .xml / .pt2 to run instead of PyTorch.
            runtime (str or None): the exported model's runtime
                (:class:`~yolact_d2.deploy.ExportedPredictor`).
            threads (int): intra-op threads of the worker (torch, OpenCV, the runtime).
            batch_size (int): images per model call (an exported model takes them one by one).
            polygons (bool): add each mask's polygons to the results.
            category_map (dict or None): the dataset's category id -> contiguous class id.
        """
        import cv2
        import torch

        start = time.perf_counter()
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        if model:
            from yolact_d2.deploy import ExportedPredictor

            predictor = _OneByOne(ExportedPredictor(model, runtime, num_threads=threads))
        else:
            from yolact_d2.engine import YolactPredictor

            predictor = YolactPredictor(cfg)
        metadata = Metadata(name="predict_dataset")
        if category_map:
            metadata.set(thing_dataset_id_to_contiguous_id=dict(category_map))
        self.demo = Demo(predictor, metadata, polygons=polygons, batch_size=batch_size)
        self.shard_dir = shard_dir
        self.init_seconds = time.perf_counter() - start

    def predict_shard(self, name: str, entries: Sequence[Tuple[int, str]]) -> Dict:
        """
        Predicts one shard's images and writes ``<shard_dir>/<name>``: {"images": count,
        "failed": [unreadable paths], "results": [COCO results, as the demo's json]}.

        Returns:
            dict: the shard's summary row.
        """
        start = time.time()
        demo = self.demo
        demo.results, demo.failed = [], []
        for image, instances in demo.run_images(read_images(entries), len(entries)):
            demo.collect(instances, image.image_id, file_name=os.path.basename(image.name))
        shard = {"images": len(entries), "failed": demo.failed, "results": demo.results}
        with atomic_open(os.path.join(self.shard_dir, name), "w") as f:
            json.dump(shard, f)
        return {
            "name": name,
            "images": len(entries),
            "detections": len(demo.results),
            "failed": json.dumps(demo.failed),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "peak_rss_mib": _peak_rss_mib(),
            "init_seconds": self.init_seconds,
            "start": start,
            "end": time.time(),
        }

    def __call__(self, batch: Dict) -> Dict[str, list]:
        rows = [
            self.predict_shard(str(name), [tuple(e) for e in json.loads(str(entries))])
            for name, entries in zip(batch["name"], batch["entries"])
        ]
        return {key: [row[key] for row in rows] for key in SUMMARY_FIELDS}


def start_ray(address: Optional[str] = None, num_cpus: Optional[int] = None) -> Tuple[bool, float]:
    """
    Connects to the Ray cluster at ``address`` (``ray.init(address=...)``: "auto", or
    "ray://HOST:10001" through Ray Client), or else starts Ray on this machine with ``num_cpus``
    CPUs and no dashboard; nothing when Ray is already initialised in this process.

    Returns:
        tuple[bool, float]: whether Ray was started (or connected to) here, and the seconds it
        took.
    """
    import ray

    if ray.is_initialized():
        return False, 0.0
    start = time.perf_counter()
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
    return True, time.perf_counter() - start


def predict_shards(
    shards: Sequence[Shard],
    shard_dir: str,
    predictor_kwargs: Dict,
    num_workers: int,
    threads: int = 1,
    gpus: float = 0,
    on_shard: Optional[Callable[[Dict], None]] = None,
) -> List[Dict]:
    """
    Runs ``shards`` on Ray Data: their rows from ``ray.data.from_items`` (one block per shard),
    ``map_batches`` to a fixed pool of ``num_workers`` :class:`ShardPredictor` actors (``threads``
    CPUs and ``gpus`` GPUs each; one shard in flight per actor, so that a free actor takes the
    next shard), summaries streamed back as shards finish.

    Args:
        shards: the shards to predict.
        shard_dir (str): where the actors write the shard files.
        predictor_kwargs (dict): :class:`ShardPredictor`'s arguments other than ``shard_dir``.
        num_workers (int): actors.
        threads (int): CPUs (and intra-op threads) per actor.
        gpus (float): GPUs per actor.
        on_shard: called with each summary row as it arrives.

    Returns:
        list[dict]: the summary rows (:data:`SUMMARY_FIELDS`), in the order they finished.
    """
    import ray.data
    from ray.util.debug import log_once

    if not shards:
        return []
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the tool shows its own, in images
    log_once("ray_data_progress_manager_disabled")  # ... without Ray Data's warning about it
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    items = [{"name": shard.name, "entries": json.dumps(shard.entries)} for shard in shards]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    dataset = dataset.map_batches(
        ShardPredictor,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=num_workers, max_tasks_in_flight_per_actor=1),
        fn_constructor_kwargs=dict(predictor_kwargs, shard_dir=shard_dir, threads=threads),
        num_cpus=threads,
        num_gpus=gpus,
        # The demo's per-image progress bars would interleave in the driver's output.
        runtime_env={"env_vars": {"TQDM_DISABLE": "1"}},
    )
    rows = []
    for row in dataset.iter_rows():
        row = {key: row[key] for key in SUMMARY_FIELDS}
        rows.append(row)
        if on_shard is not None:
            on_shard(row)
    return rows


# The Parquet columns of the COCO results fields (those the results have are written).
def _parquet_schema(first_result: Dict):
    import pyarrow as pa

    columns = [
        ("image_id", pa.int64()),
        ("category_id", pa.int64()),
        ("bbox", pa.list_(pa.float64())),
        ("score", pa.float64()),
        ("mask_score", pa.float64()),
        (
            "segmentation",
            pa.struct([("size", pa.list_(pa.int64())), ("counts", pa.string())]),
        ),
        (
            "polygons",
            pa.list_(
                pa.struct(
                    [
                        ("exterior", pa.list_(pa.int64())),
                        ("holes", pa.list_(pa.list_(pa.int64()))),
                    ]
                )
            ),
        ),
        ("file_name", pa.string()),
    ]
    return pa.schema([(name, kind) for name, kind in columns if name in first_result])


class _ParquetSink:
    """Writes results to a Parquet file shard by shard (the schema from the first result)."""

    def __init__(self, file):
        self.file, self.writer = file, None

    def write(self, results: List[Dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not results:
            return
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.file, _parquet_schema(results[0]))
        self.writer.write_table(pa.Table.from_pylist(results, schema=self.writer.schema))

    def close(self) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:  # no detection at all: the columns every result has
            base = {"image_id": 0, "category_id": 0, "bbox": 0, "score": 0, "segmentation": 0}
            self.writer = pq.ParquetWriter(self.file, _parquet_schema(base))
        self.writer.close()


def merge_shards(
    shards: Sequence[Shard],
    shard_dir: str,
    output_json: str,
    parquet: Optional[str] = None,
) -> MergeSummary:
    """
    Writes the results of ``shards`` (their files in ``shard_dir``), in shard order, to
    ``output_json`` — the bytes ``json.dump`` of the concatenated results would write, streamed
    one shard at a time — and optionally to ``parquet`` (one row per detection, the RLE mask as
    a struct of "size" and "counts"); each file is written atomically.

    Raises:
        FileNotFoundError: a shard's file is missing.

    Returns:
        MergeSummary
    """
    summary = MergeSummary()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(atomic_open(output_json, "w"))
        sink = _ParquetSink(stack.enter_context(atomic_open(parquet, "wb"))) if parquet else None
        out.write("[")
        for shard in shards:
            with open(os.path.join(shard_dir, shard.name)) as f:
                data = json.load(f)
            for result in data["results"]:
                out.write((", " if summary.detections else "") + json.dumps(result))
                summary.detections += 1
            if sink is not None:
                sink.write(data["results"])
            summary.images += data["images"]
            summary.failed += data["failed"]
        out.write("]")
        if sink is not None:
            sink.close()
    return summary
