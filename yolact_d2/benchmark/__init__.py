# Copyright (c) yolact_d2 contributors.
"""
Benchmarks: YOLACT and Detectron2 configs side by side (latency, throughput, memory, size,
FLOPs, YOLACT's stage breakdown, fast-path agreement, AP), and the NMS variants compared.
The command-line entry points are ``tools/benchmark.py`` and ``tools/benchmark_nms.py``.
"""

from yolact_d2.evaluation.mask_agreement import MaskAgreement, mask_ious, match_detections

from .accuracy import dataset_subset, evaluate_ap
from .analysis import count_gflops, count_parameters
from .calibration import calibrate_batch_norm, calibrate_detections
from .images import dataset_image_files, default_image_dir, image_files, load_images, resize_images
from .nms_benchmark import (
    NMS_METHODS,
    CandidateSet,
    benchmark_nms,
    clustered_candidates,
    dataset_objects,
    model_candidate_sets,
    nms_ap,
    random_objects,
    synthetic_candidate_sets,
    yolact_priors,
)
from .original import check_original_repo, original_config, parity_with_original, run_original
from .predictor import (
    CONFIG_PRESETS,
    PRECISIONS,
    BenchmarkPredictor,
    build_predictor,
    config_label,
    input_description,
    is_yolact,
    load_config_spec,
    load_weights,
    parse_config_spec,
    resolve_config_file,
    supported_precisions,
)
from .report import (
    MEMORY_COLUMNS,
    NMS_COLUMNS,
    STAGE_COLUMNS,
    SUMMARY_COLUMNS,
    format_value,
    markdown_table,
    plot_speed_vs_ap,
    write_csv,
)
from .runner import BenchmarkSettings, add_relative_speed, benchmark_config, memory_by_image_size
from .runtimes import RUNTIMES, RuntimePredictor, build_runtime_predictor, runtime_precisions
from .stage_breakdown import synthetic_postprocess, timed_stages
from .timing import PeakMemory, Stopwatch, cpu_load, latency_stats, synchronize
