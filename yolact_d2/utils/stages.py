# Copyright (c) yolact_d2 contributors.
"""
Named stages of YOLACT inference. The model marks each stage of its one inference path with
:func:`stage`; every caller (``DefaultPredictor``, the evaluator, the benchmark, exporters) runs
that same code. The marks cost nothing measurable: each is a ``torch.profiler`` label
("yolact_d2::<stage>", visible in any profile), and a wall-clock interval only while a
:class:`StageRecorder` is active, which is how the benchmark times the stages::

    with StageRecorder(device) as recorder:
        predictor(image)
    recorder.seconds()       # {"preprocess": s, "backbone_fpn": s, ...}
    recorder.counts          # {"candidates": [n, ...]}: per-image figures the model reported
"""

import contextlib
import time
from typing import Dict, Iterator, List

import torch

__all__ = [
    "STAGES",
    "NETWORK_STAGES",
    "POSTPROCESS_STAGES",
    "Stopwatch",
    "StageRecorder",
    "stage",
    "record_count",
    "synchronize",
]

# preprocess: the predictor's input conversion, the model's S x S resize and normalisation (and
#   the channels_last copy of the fast path);
# backbone_fpn, head, protonet: the three networks (head includes building its level list);
# decode: from the networks to NMS - prior generation, output casts, box decoding, softmax and
#   the score pre-filter;
# nms: the configured NMS on the candidates;
# mask_assembly: prototypes x coefficients, sigmoid, crop (and YOLACT++ re-scoring);
# paste: upsampling the masks to the image, thresholding, building Instances.
NETWORK_STAGES = ("backbone_fpn", "head", "protonet")
POSTPROCESS_STAGES = ("decode", "nms", "mask_assembly", "paste")
STAGES = ("preprocess",) + NETWORK_STAGES + POSTPROCESS_STAGES


def synchronize(device: torch.device) -> None:
    """Waits for queued CUDA work on ``device`` (a no-op on CPU), so that times are real."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """
    Named wall-clock intervals, synchronising ``device`` at both ends of each::

        watch = Stopwatch(device)
        with watch("nms"):
            ...
        watch.totals()  # {"nms": seconds, ...}; repeated names accumulate.
    """

    def __init__(self, device: torch.device = torch.device("cpu")):
        self.device = torch.device(device)
        self._totals: Dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        """Adds ``seconds`` to the interval ``name``."""
        self._totals[name] = self._totals.get(name, 0.0) + seconds

    def totals(self) -> Dict[str, float]:
        """Seconds per name, in first-seen order."""
        return dict(self._totals)


_active: List["StageRecorder"] = []


class StageRecorder:
    """
    While active (``with StageRecorder(device) as recorder:``), times every :func:`stage` the
    code runs and collects the figures passed to :func:`record_count`. Not re-entrant.
    """

    def __init__(self, device: torch.device = torch.device("cpu")):
        self.watch = Stopwatch(device)
        self.counts: Dict[str, List[float]] = {}

    def __enter__(self) -> "StageRecorder":
        _active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _active.remove(self)

    def seconds(self) -> Dict[str, float]:
        """Seconds spent in each of :data:`STAGES` (0 for a stage that did not run)."""
        totals = self.watch.totals()
        return {s: totals.get(s, 0.0) for s in STAGES}


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Marks the code inside as the inference stage ``name`` (one of :data:`STAGES`)."""
    with torch.profiler.record_function(f"yolact_d2::{name}"):
        if not _active:
            yield
            return
        with _active[-1].watch(name):
            yield


def record_count(name: str, value: float) -> None:
    """Reports a per-image figure (e.g. the candidates entering NMS) to the active recorder."""
    if _active:
        _active[-1].counts.setdefault(name, []).append(value)
