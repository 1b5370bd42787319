# Copyright (c) yolact_d2 contributors.
"""What the CPU can do, for deciding fast paths at run time and for labelling measured figures."""

import os
import platform
from typing import List

import torch

__all__ = ["cpu_flags", "cpu_flags_summary", "has_amx"]

# The flags that decide which reduced-precision paths pay off on x86 CPUs.
_RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu_flags(path: str = "/proc/cpuinfo") -> List[str]:
    """
    The relevant instruction-set flags of the first CPU listed in ``path`` (Linux), in a fixed
    order; an empty list where the file does not exist.
    """
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in _RELEVANT_FLAGS if flag in present]
    except OSError:
        pass
    return []


def has_amx() -> bool:
    """Whether PyTorch can use AMX tiles on this CPU (bf16 convs then beat fp32 ones)."""
    return bool(torch.cpu._is_amx_tile_supported())


def cpu_flags_summary() -> str:
    """One line for reports, e.g. ``x86_64, 2 cores, flags avx2 avx512f avx512_bf16, no AMX``."""
    flags = cpu_flags()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{platform.machine()}, {cores} cores, flags {' '.join(flags) or 'unknown'}, "
        f"{'AMX' if has_amx() else 'no AMX'}"
    )
