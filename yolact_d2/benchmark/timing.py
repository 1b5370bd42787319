# Copyright (c) yolact_d2 contributors.
"""Wall-clock timing, latency statistics and peak-memory measurement."""

import contextlib
import numpy as np
import resource
from typing import Dict, List, Optional, Sequence

import torch

from yolact_d2.utils.stages import Stopwatch, synchronize

__all__ = ["synchronize", "Stopwatch", "latency_stats", "PeakMemory", "cpu_load"]


def latency_stats(seconds: Sequence[float]) -> Dict[str, float]:
    """
    Args:
        seconds (list[float]): one latency per timed call.

    Returns:
        dict: "median_ms", "p90_ms", "mean_ms", "min_ms" and "total_s" (NaN when empty).
    """
    if len(seconds) == 0:
        nan = float("nan")
        return {"median_ms": nan, "p90_ms": nan, "mean_ms": nan, "min_ms": nan, "total_s": 0.0}
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    return {
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "total_s": float(ms.sum() / 1000),
    }


def _read_status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    """Resets the kernel's resident-set high-water mark (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory(contextlib.AbstractContextManager):
    """
    Peak memory of the code run inside the context.

    * ``rss_mb``: the process's resident-set high-water mark (VmHWM) during the context, which
      includes the Python interpreter, libraries and the model. Where the mark cannot be reset
      (no writable ``/proc/self/clear_refs``) it is the process's lifetime peak
      (``getrusage``) and ``rss_is_lifetime_peak`` is True.
    * ``cuda_mb``: ``torch.cuda.max_memory_allocated`` during the context on a CUDA device.
    """

    def __init__(self, device: torch.device = torch.device("cpu")):
        self.device = torch.device(device)
        self.rss_mb = float("nan")
        self.cuda_mb = float("nan")
        self.rss_is_lifetime_peak = False

    def __enter__(self):
        self.rss_is_lifetime_peak = not _reset_rss_peak()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        peak_kb = None if self.rss_is_lifetime_peak else _read_status_kb("VmHWM")
        if peak_kb is None:
            self.rss_is_lifetime_peak = True
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        self.rss_mb = peak_kb / 1024
        if self.device.type == "cuda":
            synchronize(self.device)
            self.cuda_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        return False


def cpu_load() -> List[float]:
    """The 1, 5 and 15 minute load averages (empty where unavailable)."""
    try:
        with open("/proc/loadavg") as f:
            return [float(v) for v in f.read().split()[:3]]
    except OSError:
        return []
