# Copyright (c) yolact_d2 contributors.
"""
Inference over large image collections on Ray Data (``tools/predict_dataset.py``): the same
command on one machine or a cluster. Ray is the optional ``scale`` extra
(``pip install -e ".[scale]"``) and is imported only where it is used.
"""

from .ray_inference import (
    MergeSummary,
    Shard,
    ShardPredictor,
    merge_shards,
    plan_shards,
    predict_shards,
    run_fingerprint,
    start_ray,
)

__all__ = [
    "MergeSummary",
    "Shard",
    "ShardPredictor",
    "merge_shards",
    "plan_shards",
    "predict_shards",
    "run_fingerprint",
    "start_ray",
]
