# Copyright (c) yolact_d2 contributors.
"""The proof on real data: overfit a fixed tiny_coco subset and report the loss curve and AP."""

import json
import os
from typing import Dict, List

__all__ = ["read_loss_history", "plot_loss_curve", "loss_drop"]


def read_loss_history(metrics_json: str) -> List[Dict[str, float]]:
    """
    Reads Detectron2's ``metrics.json`` (one JSON object per line) and returns the entries that
    carry ``total_loss``, each with "iteration" and the loss values.
    """
    if not os.path.isfile(metrics_json):
        raise FileNotFoundError(f"{metrics_json} not found: did training write metrics?")
    history = []
    with open(metrics_json) as f:
        for line in f:
            entry = json.loads(line)
            if "total_loss" in entry:
                history.append(
                    {
                        k: v
                        for k, v in entry.items()
                        if k == "iteration" or k.endswith("loss") or k.startswith("loss_")
                    }
                )
    return history


def loss_drop(history: List[Dict[str, float]], window: int = 3) -> Dict[str, float]:
    """
    Relative drop of the total loss between the mean of the first and last ``window`` entries.

    Returns:
        dict: "first", "last" and "drop" (a fraction; 0.6 means 60% lower).
    """
    if len(history) < 2:
        raise ValueError("need at least two logged iterations to measure a loss drop")
    window = max(1, min(window, len(history) // 2))
    first = sum(h["total_loss"] for h in history[:window]) / window
    last = sum(h["total_loss"] for h in history[-window:]) / window
    return {"first": first, "last": last, "drop": 1.0 - last / first}


def plot_loss_curve(history: List[Dict[str, float]], path: str, title: str = "") -> str:
    """Draws the total and per-term losses against the iteration into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = [h["iteration"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    keys = ["total_loss"] + sorted(k for k in history[0] if k.startswith("loss_"))
    for key in keys:
        ax.plot(
            iterations,
            [h.get(key, float("nan")) for h in history],
            label=key,
            lw=2 if key == "total_loss" else 1,
        )
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (log scale)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
