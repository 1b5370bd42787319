# Copyright (c) yolact_d2 contributors.
"""Benchmark reports: Markdown tables, CSV, and a speed / mask-AP plot after YOLACT's Figure 1."""

import csv
import math
from typing import Dict, List, Sequence, Tuple

__all__ = [
    "SUMMARY_COLUMNS",
    "STAGE_COLUMNS",
    "NMS_COLUMNS",
    "MEMORY_COLUMNS",
    "format_value",
    "markdown_table",
    "write_csv",
    "plot_speed_vs_ap",
]

# (row key, header, format) of the main table.
SUMMARY_COLUMNS: List[Tuple[str, str, str]] = [
    ("config", "config", "s"),
    ("runtime", "runtime", "s"),
    ("precision", "precision", "s"),
    ("threads", "threads", "d"),
    ("batch_size", "batch", "d"),
    ("input", "input", "s"),
    ("images", "images", "d"),
    ("detections_per_image", "det/img", ".1f"),
    ("median_ms", "median ms", ".1f"),
    ("p90_ms", "p90 ms", ".1f"),
    ("images_per_s", "img/s", ".2f"),
    ("peak_rss_mb", "peak RSS MB", ".0f"),
    ("first_call_s", "first call s", ".1f"),
    ("params_m", "params M", ".1f"),
    ("gflops", "GFLOPs", ".1f"),
    ("speedup_vs_fp32", "x vs fp32", ".2f"),
    ("speedup_vs_baseline", "x vs baseline", ".2f"),
    ("speedup_vs_original", "x vs original", ".2f"),
    ("postprocess_pct", "post-proc %", ".1f"),
    ("mask_iou_vs_fp32", "mask IoU vs fp32", ".4f"),
    ("matched_vs_fp32", "matched vs fp32", ".2f"),
    ("same_vs_fp32", "same det. vs fp32", ".3f"),
    ("mask_ap", "mask AP", ".1f"),
    ("box_ap", "box AP", ".1f"),
]

# YOLACT's stage breakdown (median ms per image).
STAGE_COLUMNS: List[Tuple[str, str, str]] = [
    ("config", "config", "s"),
    ("precision", "precision", "s"),
    ("threads", "threads", "d"),
    ("candidates_per_image", "candidates/img", ".0f"),
    ("stage_preprocess_ms", "preprocess", ".1f"),
    ("stage_backbone_fpn_ms", "backbone+FPN", ".1f"),
    ("stage_head_ms", "head", ".1f"),
    ("stage_protonet_ms", "protonet", ".1f"),
    ("stage_decode_ms", "decode", ".1f"),
    ("stage_nms_ms", "NMS", ".1f"),
    ("stage_mask_assembly_ms", "mask assembly", ".1f"),
    ("stage_paste_ms", "paste", ".1f"),
    ("stage_sum_ms", "sum of stages", ".1f"),
    ("median_ms", "end-to-end median", ".1f"),
    ("postprocess_ms", "post-proc", ".1f"),
    ("postprocess_pct", "post-proc %", ".1f"),
    ("synthetic_candidates_per_image", "synthetic: candidates/img", ".0f"),
    ("synthetic_detections_per_image", "synthetic: det/img", ".1f"),
    ("synthetic_stage_nms_ms", "synthetic: NMS", ".1f"),
    ("synthetic_stage_paste_ms", "synthetic: paste", ".1f"),
    ("synthetic_postprocess_ms", "synthetic: post-proc", ".1f"),
    ("synthetic_postprocess_pct", "synthetic: post-proc %", ".1f"),
]


# Peak memory of one call per image size (tools/benchmark.py --memory-sizes).
MEMORY_COLUMNS: List[Tuple[str, str, str]] = [
    ("config", "config", "s"),
    ("precision", "precision", "s"),
    ("image_size", "image", "s"),
    ("detections", "detections", "d"),
    ("masks_mb", "pred_masks MB", ".1f"),
    ("peak_rss_mb", "peak RSS MB", ".0f"),
    ("rss_vs_first", "x first size", ".2f"),
]

# The NMS comparison (tools/benchmark_nms.py).
NMS_COLUMNS: List[Tuple[str, str, str]] = [
    ("method", "method", "s"),
    ("candidates_per_image", "candidates/img", ".0f"),
    ("median_ms", "median ms", ".2f"),
    ("p90_ms", "p90 ms", ".2f"),
    ("time_vs_fast", "time / Fast NMS", ".2f"),
    ("kept_per_image", "kept/img", ".1f"),
    ("only_method_per_image", "kept only here/img", ".1f"),
    ("only_fast_per_image", "kept only by Fast NMS/img", ".1f"),
    ("differing_pct", "differing %", ".1f"),
    ("mask_ap", "mask AP", ".1f"),
    ("box_ap", "box AP", ".1f"),
]


def format_value(value, fmt: str) -> str:
    """Formats one cell; missing or NaN values read "n/a"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if fmt == "s":
        return str(value)
    if fmt == "d":
        return str(int(value))
    return format(value, fmt)


def markdown_table(rows: Sequence[Dict], columns: Sequence[Tuple[str, str, str]]) -> str:
    """A GitHub Markdown table of ``rows`` with the given (key, header, format) columns."""
    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |"]
    lines.append("|" + "|".join("---" if fmt == "s" else "---:" for _, _, fmt in columns) + "|")
    for row in rows:
        cells = [format_value(row.get(key), fmt) for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(
    rows: Sequence[Dict], path: str, columns: Sequence[Tuple[str, str, str]] = ()
) -> None:
    """Every key of every row, the keys of ``columns`` first (default: the main tables')."""
    keys = [k for k, _, _ in (columns or SUMMARY_COLUMNS + STAGE_COLUMNS)]
    keys = list(dict.fromkeys(keys + [k for row in rows for k in row]))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _label(row: Dict) -> str:
    runtime = row.get("runtime", "pytorch")
    runtime = "" if runtime == "pytorch" else f"{runtime} "
    return f"{row['config']} ({runtime}{row['precision']}, {row['threads']} thr)"


def _speed_bars(ax, rows: Sequence[Dict]) -> None:
    bars = ax.barh(range(len(rows)), [r["images_per_s"] for r in rows], color="tab:blue")
    ax.set_yticks(range(len(rows)), [_label(r) for r in rows], fontsize=7)
    ax.invert_yaxis()
    for bar, row in zip(bars, rows):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {row['images_per_s']:.1f}/s, {row['median_ms']:.0f} ms",
            va="center",
            fontsize=7,
        )
    ax.set_xlabel("images / s (end to end, DefaultPredictor)")
    ax.margins(x=0.25)


def plot_speed_vs_ap(rows: Sequence[Dict], path: str, title: str = "") -> None:
    """
    Every row's speed (images/s bars) and, where rows have a mask AP (trained weights), speed
    against mask AP as YOLACT's Figure 1 (images/s on x, mask AP on y) in a second panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_ap = [r for r in rows if not math.isnan(r.get("mask_ap", float("nan")))]
    height = max(3.5, 0.32 * len(rows) + 1.5)
    panels = 2 if with_ap else 1
    width = 7 * panels + (3 if with_ap else 0)  # room for the legend beside the AP panel
    fig, axes = plt.subplots(1, panels, figsize=(width, height), squeeze=False)
    _speed_bars(axes[0][0], rows)
    if with_ap:
        ax = axes[0][1]
        markers = "osD^v<>pXP*h"
        configs = list(dict.fromkeys(r["config"] for r in with_ap))
        for i, row in enumerate(with_ap):
            marker = markers[configs.index(row["config"]) % len(markers)]
            ax.scatter(row["images_per_s"], row["mask_ap"], s=45, marker=marker, label=_label(row))
        ax.set_xscale("log")
        ax.set_xlabel("images / s (log scale)")
        ax.set_ylabel("mask AP (trained weights, each on its own dataset)")
        ax.margins(x=0.15, y=0.3)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        axes[0][0].set_title("mask AP not measured (no weights given): speed only", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
