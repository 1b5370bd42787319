# Copyright (c) yolact_d2 contributors.
"""
Configs and predictors for benchmarks: this project's YOLACT configs and Detectron2 model-zoo
configs side by side, in fp32, bf16 or the fast CPU path.
"""

import contextlib
import os
from typing import List, Optional, Sequence, Tuple

import torch

from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode

from yolact_d2.engine.cli import load_config
from yolact_d2.engine.predictor import YolactPredictor
from yolact_d2.layers.input_size import aspect_preserving_size, padded_input_size
from yolact_d2.model_zoo import CONFIG_DIR

__all__ = [
    "PRECISIONS",
    "CONFIG_PRESETS",
    "resolve_config_file",
    "parse_config_spec",
    "load_config_spec",
    "is_yolact",
    "config_label",
    "input_description",
    "supported_precisions",
    "BenchmarkPredictor",
    "build_predictor",
    "load_weights",
]


# "fp32": the default model (for YOLACT the exact path, bit-identical to the reference);
# "bf16": bfloat16 autocast (for YOLACT its fast CPU path with FAST_CPU_DTYPE "bfloat16");
# YOLACT only: "fp32-fast": the fast CPU path in float32 (BatchNorm folded, channels_last);
# "fast": the fast CPU path with FAST_CPU_DTYPE "auto" (bf16 where the CPU has bf16
# instructions); "int8": quantised, on OpenVINO. YOLACT's fast-path rows are compiled
# (FAST_CPU_COMPILE; the compilation happens during the warm-up). On CUDA: "fp32", "bf16" and
# "fp16" (float16 autocast, what SOLVER.AMP.ENABLED trains with).
PRECISIONS = ("fp32", "fp32-fast", "bf16", "fast", "int8", "fp16")
_CPU_YOLACT_PRECISIONS = ("fp32", "fp32-fast", "bf16", "fast", "int8")


def resolve_config_file(name: str) -> str:
    """
    Finds a config by path, by name under this repository's ``configs/``, or as a Detectron2
    model-zoo name (e.g. "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml").

    Returns:
        str: the config file's path.
    """
    for path in (name, os.path.join(CONFIG_DIR, name)):
        if os.path.isfile(path):
            return path
    try:
        return model_zoo.get_config_file(name)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"{name!r} is neither a file, nor in {CONFIG_DIR}, nor a " "Detectron2 model-zoo config"
        ) from e


# Named overrides usable in config specs ("CONFIG::full_workload").
CONFIG_PRESETS = {
    # With random weights Mask R-CNN's RPN proposes a handful of exploded boxes and every class
    # scores below 0.05, which skips most of its ROI heads. Near-zero box regression (proposals
    # are anchors, detections are proposals) and no score threshold restore a trained model's
    # workload: 1000 proposals through the box head and 100 detections through the mask head.
    "full_workload": [
        "MODEL.RPN.BBOX_REG_WEIGHTS", "(1e6, 1e6, 1e6, 1e6)",
        "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", "(1e6, 1e6, 1e6, 1e6)",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    ],  # fmt: skip
}


def _split_top_level(text: str) -> List[str]:
    """Splits at commas outside brackets, so that values may be tuples or lists."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char in "([" and 1 or 0
        depth -= char in ")]" and 1 or 0
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]


def parse_config_spec(spec: str) -> Tuple[str, List[str], List[str]]:
    """
    Splits "CONFIG" or "CONFIG::ITEM,ITEM" where an item is KEY=VALUE (VALUE may be a tuple)
    or the name of a :data:`CONFIG_PRESETS` entry; the overrides apply to this config only, e.g.
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml::MODEL.ROI_HEADS.SCORE_THRESH_TEST=0.0".

    Returns:
        (str, list[str], list[str]): the config name, its KEY VALUE overrides, and short
        descriptions of them for labels.
    """
    name, _, overrides = spec.partition("::")
    opts, descriptions = [], []
    for item in _split_top_level(overrides):
        if item in CONFIG_PRESETS:
            opts += CONFIG_PRESETS[item]
            descriptions.append(item)
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(
                f"config override {item!r} in {spec!r} is neither KEY=VALUE nor one of "
                f"{sorted(CONFIG_PRESETS)}"
            )
        opts += [key, value]
        descriptions.append(f"{key.split('.')[-1]}={value}")
    return name, opts, descriptions


def load_config_spec(spec: str, opts: Sequence[str] = (), device: str = "cpu") -> CfgNode:
    """
    A config with YOLACT's options added (harmless for other models), no weights (random
    initialisation) and the given device; the spec's own overrides (see
    :func:`parse_config_spec`) and then ``opts`` are applied last; then its
    ``DATASETS.REGISTER_COCO`` datasets are registered and ``MODEL.YOLACT.NUM_CLASSES`` is checked
    (:func:`yolact_d2.data.setup_datasets`).

    Args:
        spec (str): see :func:`resolve_config_file` and :func:`parse_config_spec`.
        opts (list[str]): KEY VALUE pairs.
        device (str): "cpu" or "cuda".
    """
    name, spec_opts, _ = parse_config_spec(spec)
    base = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device]
    return load_config(resolve_config_file(name), base + spec_opts + list(opts), cpu_fallback=False)


def is_yolact(cfg: CfgNode) -> bool:
    return cfg.MODEL.META_ARCHITECTURE == "Yolact"


def config_label(spec: str) -> str:
    """
    The config's file name without ".yaml", with the spec's overrides as short KEY=VALUE or
    preset names, e.g. "mask_rcnn_R_50_FPN_1x" or "mask_rcnn_R_50_FPN_1x[full_workload]".
    """
    name, _, descriptions = parse_config_spec(spec)
    label = os.path.splitext(os.path.basename(name))[0]
    return label + ("[" + ",".join(descriptions) + "]" if descriptions else "")


def input_description(cfg: CfgNode, image_sizes: Sequence[Tuple[int, int]] = ()) -> str:
    """
    How the model sizes its input (width x height), e.g. "550x550", "short 800, max 1333", or
    with ``MODEL.YOLACT.PRESERVE_ASPECT_RATIO`` the network input of the (H, W) ``image_sizes``
    ("552x312"; distinct ones joined by "/"; "aspect" without sizes).
    """
    if is_yolact(cfg):
        size = cfg.MODEL.YOLACT.INPUT_SIZE
        if not cfg.MODEL.YOLACT.PRESERVE_ASPECT_RATIO:
            return f"{size}x{size}"
        inputs = []
        for height, width in image_sizes:
            h, w = padded_input_size(*aspect_preserving_size(height, width, size), size)
            if f"{w}x{h}" not in inputs:
                inputs.append(f"{w}x{h}")
        return "/".join(inputs[:3]) + ("/..." if len(inputs) > 3 else "") or "aspect"
    return f"short {cfg.INPUT.MIN_SIZE_TEST}, max {cfg.INPUT.MAX_SIZE_TEST}"


def supported_precisions(cfg: CfgNode) -> Tuple[str, ...]:
    """
    The :data:`PRECISIONS` that apply: "fp32-fast" and "fast" are YOLACT's fast CPU path only,
    "int8" YOLACT quantised and run on OpenVINO (``--runtime openvino``) only, "fp16" CUDA only.
    """
    if cfg.MODEL.DEVICE.startswith("cuda"):
        return ("fp32", "bf16", "fp16")
    if is_yolact(cfg):
        return _CPU_YOLACT_PRECISIONS
    return ("fp32", "bf16")


def _precision_opts(cfg: CfgNode, precision: str) -> List:
    if precision not in supported_precisions(cfg):
        raise ValueError(
            f"precision {precision!r} does not apply to {cfg.MODEL.META_ARCHITECTURE} on "
            f"{cfg.MODEL.DEVICE}; use one of {supported_precisions(cfg)}"
        )
    if not is_yolact(cfg):
        return []
    if precision == "int8":
        raise ValueError(
            "int8 is YOLACT quantised for OpenVINO: measure it with --runtime openvino"
        )
    if precision in ("fp32", "fp16"):  # (fp16: autocast by BenchmarkPredictor, on CUDA)
        return ["MODEL.YOLACT.FAST_CPU_INFERENCE", False]
    dtype = {"fp32-fast": "float32", "bf16": "bfloat16", "fast": "auto"}[precision]
    return [
        "MODEL.YOLACT.FAST_CPU_INFERENCE", True,
        "MODEL.YOLACT.FAST_CPU_DTYPE", dtype,
        "MODEL.YOLACT.FAST_CPU_COMPILE", cfg.MODEL.DEVICE == "cpu",
    ]  # fmt: skip


class BenchmarkPredictor(YolactPredictor):
    """
    :class:`~yolact_d2.engine.YolactPredictor` (so :class:`DefaultPredictor`, whose
    ``__call__`` is timed unchanged, and batched calls) that applies autocast around the model
    where its precision asks for it: for Detectron2 models in "bf16", and for any model on CUDA
    in "bf16" and "fp16" (YOLACT's own fast path is CPU-only).
    """

    def __init__(self, cfg: CfgNode, precision: str = "fp32"):
        super().__init__(cfg)
        self.precision = precision
        self.device = torch.device(cfg.MODEL.DEVICE)
        self._autocast_dtype = None
        if precision == "fp16":
            self._autocast_dtype = torch.float16
        elif precision == "bf16" and (not is_yolact(cfg) or self.device.type == "cuda"):
            self._autocast_dtype = torch.bfloat16

    def autocast(self):
        """The autocast context the model runs under (a no-op unless needed)."""
        if self._autocast_dtype is not None:
            return torch.autocast(self.device.type, dtype=self._autocast_dtype)
        return contextlib.nullcontext()


def load_weights(
    model: torch.nn.Module, path: str, yolact: bool, allow_mismatch: bool = False
) -> None:
    """
    Loads ``path`` with the project's checkpointer for YOLACT (``allow_mismatch``: see
    :class:`~yolact_d2.checkpoint.checkpointer.YolactCheckpointer`), Detectron2's otherwise.
    """
    if yolact:
        from yolact_d2.checkpoint.checkpointer import YolactCheckpointer

        YolactCheckpointer(model, allow_mismatch=allow_mismatch).load(path)
    else:
        DetectionCheckpointer(model).load(path)


def build_predictor(
    name: str,
    precision: str = "fp32",
    device: str = "cpu",
    opts: Sequence[str] = (),
    weights: Optional[str] = None,
    seed: int = 0,
) -> BenchmarkPredictor:
    """
    Builds a predictor whose random initialisation is seeded (so that every precision of a
    config gets the same weights) and loads ``weights`` if given.

    Args:
        name (str): config (see :func:`resolve_config_file`).
        precision (str): one of :data:`PRECISIONS`.
        device (str): "cpu" or "cuda".
        opts (list[str]): extra KEY VALUE config pairs.
        weights (str or None): checkpoint to load.
        seed (int): seed of the random initialisation.
    """
    cfg = load_config_spec(name, opts, device)
    cfg.merge_from_list(_precision_opts(cfg, precision))
    torch.manual_seed(seed)
    predictor = BenchmarkPredictor(cfg, precision)
    if weights:
        allow = is_yolact(cfg) and cfg.MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH
        load_weights(predictor.model, weights, is_yolact(cfg), allow)
    return predictor
