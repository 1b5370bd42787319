# Copyright (c) yolact_d2 contributors.
"""
Conversion of the reference YOLACT / YOLACT++ checkpoints (dbolya/yolact) to yolact_d2.

A reference checkpoint is a plain ``state_dict``. The converter reads it safely (``weights_only``),
recognises the architecture from key names and shapes alone (no model is built, so it is fast),
renames every key to the yolact_d2 module names and writes a Detectron2-style checkpoint
atomically, which :class:`detectron2.checkpoint.DetectionCheckpointer` loads as is.

Validation compares the source with the exact key list and shapes that each reference
architecture produces (generated below from the architecture's definition), so truncated
files, foreign checkpoints and shape mismatches are rejected before anything is written.
"""

import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from yolact_d2.utils.file_io import atomic_open

__all__ = [
    "YolactArchitecture",
    "load_yolact_state_dict",
    "drop_legacy_keys",
    "detect_architecture",
    "convert_state_dict",
    "backbone_file_type",
    "convert_backbone_state_dict",
    "save_converted_checkpoint",
    "convert_yolact_checkpoint",
]

logger = logging.getLogger(__name__)

Shape = Tuple[int, ...]
KeySpec = Dict[str, Shape]

# Hyper-parameters of the reference that the checkpoint's shapes may override.
_DEFAULT_NUM_CLASSES = 80
_DEFAULT_NUM_PROTOTYPES = 32
# Channels of the FPN, protonet and head convs in every reference config.
_FPN_DIM = 256
# Number of errors of each kind quoted in an error message.
_MAX_QUOTED = 5


# ------------------------------------------------------------------------------------------------
# Architectures
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    """
    One weights layout of the reference. Several reference configs may share a layout (they
    differ only in input size); the first entry of ``variants`` is the default.
    """

    variants: Tuple[Tuple[str, str], ...]  # (reference config name, yolact_d2 config file)
    backbone_type: str  # "resnet" or "darknet"
    backbone_name: str
    blocks: Tuple[int, ...]
    dcn_layers: Tuple[int, ...] = (0, 0, 0, 0)
    dcn_interval: int = 1
    num_priors: int = 3  # priors per feature-map cell (A)
    maskiou: bool = False

    @property
    def name(self) -> str:
        return self.variants[0][0]


_R50, _R101, _DARKNET53 = (3, 4, 6, 3), (3, 4, 23, 3), (1, 2, 8, 8, 4)
_LAYOUTS = (
    _Layout((("yolact_resnet50", "yolact_R_50_FPN_550.yaml"),), "resnet", "ResNet-50-FPN", _R50),
    _Layout(
        (
            ("yolact_base", "yolact_R_101_FPN_550.yaml"),
            ("yolact_im400", "yolact_R_101_FPN_400.yaml"),
            ("yolact_im700", "yolact_R_101_FPN_700.yaml"),
        ),
        "resnet",
        "ResNet-101-FPN",
        _R101,
    ),
    _Layout(
        (("yolact_darknet53", "yolact_DarkNet53_FPN_550.yaml"),),
        "darknet",
        "DarkNet-53-FPN",
        _DARKNET53,
    ),
    _Layout(
        (("yolact_plus_resnet50", "yolact_plus_R_50_FPN_550.yaml"),),
        "resnet",
        "ResNet-50-FPN with DCNv2",
        _R50,
        dcn_layers=(0, 4, 6, 3),
        num_priors=9,
        maskiou=True,
    ),
    _Layout(
        (("yolact_plus_base", "yolact_plus_R_101_FPN_550.yaml"),),
        "resnet",
        "ResNet-101-FPN with DCNv2",
        _R101,
        dcn_layers=(0, 4, 23, 3),
        dcn_interval=3,
        num_priors=9,
        maskiou=True,
    ),
)


@dataclass(frozen=True)
class YolactArchitecture:
    """
    The reference architecture of a checkpoint, as found by :func:`detect_architecture`.

    Attributes:
        name (str): reference config name, e.g. "yolact_im700".
        config_file (str): the matching yolact_d2 config, relative to the repository root.
        backbone (str): human-readable backbone, e.g. "ResNet-101-FPN".
        backbone_type (str): "resnet" or "darknet" (selects the key renaming rules).
        num_classes (int): foreground classes, from the classification layer's shape.
        num_prototypes (int): prototype masks, from the protonet's last layer.
        alternatives (tuple[str]): other reference configs with exactly the same weights layout
            when the file name did not tell which one was meant (empty otherwise).
    """

    name: str
    config_file: str
    backbone: str
    backbone_type: str
    num_classes: int = _DEFAULT_NUM_CLASSES
    num_prototypes: int = _DEFAULT_NUM_PROTOTYPES
    alternatives: Tuple[str, ...] = ()

    @property
    def description(self) -> str:
        """The name, with a note on the alternatives when the layout is ambiguous."""
        if not self.alternatives:
            return self.name
        others = "/".join(name.replace("yolact_", "", 1) for name in self.alternatives)
        return f"{self.name} (or {others}: same weights layout; pick the config by input size)"


# ------------------------------------------------------------------------------------------------
# Expected reference keys and shapes
# ------------------------------------------------------------------------------------------------
def _conv(prefix: str, out_ch: int, in_ch: int, kernel: int, bias: bool) -> KeySpec:
    spec = {f"{prefix}.weight": (out_ch, in_ch, kernel, kernel)}
    if bias:
        spec[f"{prefix}.bias"] = (out_ch,)
    return spec


def _batch_norm(prefix: str, channels: int) -> KeySpec:
    spec = {f"{prefix}.{name}": (channels,) for name in ("weight", "bias")}
    spec.update({f"{prefix}.{name}": (channels,) for name in ("running_mean", "running_var")})
    spec[f"{prefix}.num_batches_tracked"] = ()
    return spec


def _conv_bn(conv: str, norm: str, out_ch: int, in_ch: int, kernel: int) -> KeySpec:
    return {**_conv(conv, out_ch, in_ch, kernel, bias=False), **_batch_norm(norm, out_ch)}


def _uses_dcn(layout: _Layout, stage: int, block: int) -> bool:
    """The reference's rule (backbone.py, ``ResNetBackbone._make_layer``)."""
    num_blocks, dcn_layers = layout.blocks[stage], layout.dcn_layers[stage]
    if block == 0:
        return dcn_layers >= num_blocks
    return block + dcn_layers >= num_blocks and block % layout.dcn_interval == 0


def _bottleneck_spec(prefix: str, in_ch: int, planes: int, dcn: bool, downsample: bool) -> KeySpec:
    spec = _conv_bn(f"{prefix}.conv1", f"{prefix}.bn1", planes, in_ch, 1)
    spec.update(_conv(f"{prefix}.conv2", planes, planes, 3, bias=dcn))
    if dcn:
        # DCNv2 offsets (2 x 9) and modulation masks (9) of the 3x3 kernel.
        spec.update(_conv(f"{prefix}.conv2.conv_offset_mask", 27, planes, 3, bias=True))
    spec.update(_batch_norm(f"{prefix}.bn2", planes))
    spec.update(_conv_bn(f"{prefix}.conv3", f"{prefix}.bn3", planes * 4, planes, 1))
    if downsample:
        ds = f"{prefix}.downsample"
        spec.update(_conv_bn(f"{ds}.0", f"{ds}.1", planes * 4, in_ch, 1))
    return spec


def _resnet_spec(layout: _Layout) -> Tuple[KeySpec, List[int]]:
    """Keys of the reference ResNet backbone, and the channels of its C3, C4, C5 outputs."""
    spec = _conv_bn("backbone.conv1", "backbone.bn1", 64, 3, 7)
    in_ch, out_channels = 64, []
    for stage, num_blocks in enumerate(layout.blocks):
        planes = 64 * 2**stage
        for block in range(num_blocks):
            dcn = _uses_dcn(layout, stage, block)
            prefix = f"backbone.layers.{stage}.{block}"
            spec.update(_bottleneck_spec(prefix, in_ch, planes, dcn, downsample=block == 0))
            in_ch = planes * 4
        out_channels.append(in_ch)
    return spec, out_channels[-3:]


def _darknet_spec(layout: _Layout) -> Tuple[KeySpec, List[int]]:
    """Keys of the reference DarkNet-53 backbone, and the channels of its C3, C4, C5 outputs."""
    spec = _conv_bn("backbone._preconv.0", "backbone._preconv.1", 32, 3, 3)
    in_ch, out_channels = 32, []
    for stage, num_blocks in enumerate(layout.blocks):
        out_ch, prefix = 64 * 2**stage, f"backbone.layers.{stage}"
        spec.update(_conv_bn(f"{prefix}.0.0", f"{prefix}.0.1", out_ch, in_ch, 3))
        for block in range(1, num_blocks + 1):
            conv1, conv2 = f"{prefix}.{block}.conv1", f"{prefix}.{block}.conv2"
            spec.update(_conv_bn(f"{conv1}.0", f"{conv1}.1", out_ch // 2, out_ch, 1))
            spec.update(_conv_bn(f"{conv2}.0", f"{conv2}.1", out_ch, out_ch // 2, 3))
        in_ch = out_ch
        out_channels.append(out_ch)
    return spec, out_channels[-3:]


def _protonet_spec(num_prototypes: int) -> KeySpec:
    spec = {}
    for index in (0, 2, 4, 8):
        spec.update(_conv(f"proto_net.{index}", _FPN_DIM, _FPN_DIM, 3, bias=True))
    spec.update(_conv("proto_net.10", num_prototypes, _FPN_DIM, 1, bias=True))
    return spec


def _maskiou_spec(num_classes: int) -> KeySpec:
    channels = [1, 8, 16, 32, 64, 128]
    spec = {}
    for layer, (in_ch, out_ch) in enumerate(zip(channels[:-1], channels[1:])):
        spec.update(_conv(f"maskiou_net.maskiou_net.{2 * layer}", out_ch, in_ch, 3, bias=True))
    spec.update(_conv("maskiou_net.maskiou_net.10", num_classes, channels[-1], 1, bias=True))
    return spec


def _fpn_spec(in_channels: Sequence[int]) -> KeySpec:
    """The reference FPN lists its lateral / output layers from the coarsest level (C5) down."""
    spec = {}
    for index, in_ch in enumerate(reversed(in_channels)):
        spec.update(_conv(f"fpn.lat_layers.{index}", _FPN_DIM, in_ch, 1, bias=True))
    for index in range(len(in_channels)):
        spec.update(_conv(f"fpn.pred_layers.{index}", _FPN_DIM, _FPN_DIM, 3, bias=True))
    for index in range(2):
        spec.update(_conv(f"fpn.downsample_layers.{index}", _FPN_DIM, _FPN_DIM, 3, bias=True))
    return spec


def _head_spec(num_priors: int, num_classes: int, num_prototypes: int) -> KeySpec:
    prefix = "prediction_layers.0"
    spec = _conv(f"{prefix}.upfeature.0", _FPN_DIM, _FPN_DIM, 3, bias=True)
    outputs = {"bbox_layer": 4, "conf_layer": num_classes + 1, "mask_layer": num_prototypes}
    for name, per_prior in outputs.items():
        spec.update(_conv(f"{prefix}.{name}", num_priors * per_prior, _FPN_DIM, 3, bias=True))
    return spec


def _expected_keys(
    layout: _Layout, num_classes: int, num_prototypes: int, semantic_seg: bool
) -> KeySpec:
    """Every key (and its shape) of a reference checkpoint with the given layout."""
    backbone_spec = _darknet_spec if layout.backbone_type == "darknet" else _resnet_spec
    spec, fpn_in_channels = backbone_spec(layout)
    spec.update(_protonet_spec(num_prototypes))
    if layout.maskiou:
        spec.update(_maskiou_spec(num_classes))
    spec.update(_fpn_spec(fpn_in_channels))
    spec.update(_head_spec(layout.num_priors, num_classes, num_prototypes))
    if semantic_seg:
        spec.update(_conv("semantic_seg_conv", num_classes, _FPN_DIM, 1, bias=True))
    return spec


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()
    text = text[0] if text else ""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _unwrap_state_dict(obj):
    """The state dict inside a training checkpoint ({"model": ...} or {"state_dict": ...})."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                return obj[key]
    return obj


def _check_tensor_mapping(obj, path: str) -> None:
    if not isinstance(obj, Mapping) or not obj:
        kind = "an empty mapping" if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{path} is not a model checkpoint: expected a mapping of parameter names to "
            f"tensors, found {kind}."
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        quoted = ", ".join(f"{k!r} ({type(obj[k]).__name__})" for k in bad[:_MAX_QUOTED])
        raise ValueError(
            f"{path} is not a model checkpoint: {len(bad)} of its {len(obj)} entries are not "
            f"tensors named by strings, e.g. {quoted}."
        )


def load_yolact_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """
    Read a reference YOLACT checkpoint safely (``torch.load(..., weights_only=True)``).

    Args:
        path (str): a ``.pth`` file holding a state dict, or a dict wrapping one under
            "model" or "state_dict".

    Returns:
        dict[str, Tensor]: the state dict, on CPU.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be read (truncated, corrupt, not a PyTorch file) or does not
            hold a mapping of parameter names to tensors. The message names the file.
    """
    if not os.path.isfile(path):
        reason = "is a directory, not a file" if os.path.isdir(path) else "does not exist"
        raise FileNotFoundError(f"Checkpoint {path} {reason}.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated / corrupt / foreign files
        raise ValueError(
            f"Cannot read {path} as a PyTorch checkpoint ({_first_line(e)}). The file may be "
            f"truncated or corrupt (re-download it), or it is not a .pth checkpoint."
        ) from e
    state_dict = _unwrap_state_dict(obj)
    _check_tensor_mapping(state_dict, path)
    return dict(state_dict)


# ------------------------------------------------------------------------------------------------
# Detection
# ------------------------------------------------------------------------------------------------
def _is_legacy_key(key: str) -> bool:
    """Keys that the reference's ``Yolact.load_weights`` silently drops."""
    if key.startswith("backbone.layer") and not key.startswith("backbone.layers"):
        return True
    match = re.match(r"fpn\.downsample_layers\.(\d+)\.", key)
    return bool(match) and int(match.group(1)) >= 2


def drop_legacy_keys(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """
    Remove the keys the reference loader ignores: ``backbone.layer*`` (old naming, not
    ``backbone.layers.*``) and the untrained ``fpn.downsample_layers.N`` for N >= 2.

    Returns:
        dict[str, Tensor]: a new state dict without them (the drop is logged).
    """
    dropped = [k for k in state_dict if _is_legacy_key(k)]
    if dropped:
        logger.info(
            f"Dropped {len(dropped)} legacy key(s) that the reference loader also ignores: "
            + _quote(dropped)
        )
    return {k: v for k, v in state_dict.items() if not _is_legacy_key(k)}


def _shape_of(state_dict: Mapping[str, torch.Tensor], key: str) -> Optional[Shape]:
    tensor = state_dict.get(key)
    return tuple(tensor.shape) if tensor is not None else None


def _head_sizes(state_dict: Mapping[str, torch.Tensor], num_priors: int) -> Tuple[int, int]:
    """(num_classes, num_prototypes) implied by the head's shapes, defaults when unclear."""
    num_classes, num_prototypes = _DEFAULT_NUM_CLASSES, _DEFAULT_NUM_PROTOTYPES
    conf = _shape_of(state_dict, "prediction_layers.0.conf_layer.weight")
    if conf and conf[0] % num_priors == 0 and conf[0] // num_priors >= 2:
        num_classes = conf[0] // num_priors - 1
    proto = _shape_of(state_dict, "proto_net.10.weight")
    if proto:
        num_prototypes = proto[0]
    return num_classes, num_prototypes


@dataclass
class _Comparison:
    """How a state dict differs from one layout's expected keys."""

    layout: _Layout
    num_classes: int
    num_prototypes: int
    missing: List[str]
    unexpected: List[str]
    wrong_shapes: List[str]

    @property
    def num_errors(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.wrong_shapes)


def _compare(state_dict: Mapping[str, torch.Tensor], layout: _Layout) -> _Comparison:
    num_classes, num_prototypes = _head_sizes(state_dict, layout.num_priors)
    semantic_seg = any(k.startswith("semantic_seg_conv.") for k in state_dict)
    expected = _expected_keys(layout, num_classes, num_prototypes, semantic_seg)
    wrong_shapes = [
        f"{k} {_shape_of(state_dict, k)} (expected {shape})"
        for k, shape in expected.items()
        if k in state_dict and _shape_of(state_dict, k) != shape
    ]
    return _Comparison(
        layout,
        num_classes,
        num_prototypes,
        missing=[k for k in expected if k not in state_dict],
        unexpected=[k for k in state_dict if k not in expected],
        wrong_shapes=wrong_shapes,
    )


def _quote(items: Sequence[str]) -> str:
    text = ", ".join(items[:_MAX_QUOTED])
    more = len(items) - _MAX_QUOTED
    return text + (f", ... ({more} more)" if more > 0 else "")


def _is_foreign(comparison: _Comparison, num_keys: int) -> bool:
    """Whether even the closest layout matches less than half of the checkpoint's keys."""
    matched = num_keys - len(comparison.unexpected) - len(comparison.wrong_shapes)
    return matched < num_keys / 2


def _foreign_error(keys: Sequence[str], source: str) -> ValueError:
    message = (
        f"{source} is not a checkpoint of the reference YOLACT (dbolya/yolact): it matches "
        f"none of its architectures. Its keys: {_quote(keys)}."
    )
    if any(
        k.startswith(("backbone.bottom_up.", "mask_branch.", "protonet.", "head.")) for k in keys
    ):
        message += (
            " They look like a Detectron2 / already converted yolact_d2 checkpoint: load it"
            " directly with MODEL.WEIGHTS instead of converting it."
        )
    return ValueError(message)


def _mismatch_error(comparison: _Comparison, keys: Sequence[str], source: str) -> ValueError:
    if _is_foreign(comparison, len(keys)):
        return _foreign_error(keys, source)
    layout = comparison.layout
    lines = [
        f"{source} matches no known YOLACT architecture. Closest: {layout.name} "
        f"({layout.backbone_name}), which differs in {comparison.num_errors} key(s):"
    ]
    for label, items in (
        ("missing", comparison.missing),
        ("unexpected", comparison.unexpected),
        ("with a wrong shape", comparison.wrong_shapes),
    ):
        if items:
            lines.append(f"  {len(items)} key(s) {label}: {_quote(items)}")
    return ValueError("\n".join(lines))


def _variant_from_filename(layout: _Layout, filename: Optional[str]) -> Optional[int]:
    """Index of the layout variant named by ``<config>_<epoch>_<iter>.pth``, if any."""
    if not filename:
        return None
    base = os.path.basename(filename)
    matches = [
        index
        for index, (name, _) in enumerate(layout.variants)
        if re.match(re.escape(name) + r"(?![A-Za-z0-9])", base)
    ]
    return matches[0] if matches else None


def _warn_if_name_disagrees(layout: _Layout, filename: Optional[str]) -> None:
    if not filename:
        return
    base = os.path.basename(filename)
    for other in _LAYOUTS:
        if other is not layout and _variant_from_filename(other, base) is not None:
            logger.warning(
                f"{base} is named like {other.name} but its weights are {layout.name}'s; "
                "trusting the weights."
            )


def detect_architecture(
    state_dict: Mapping[str, torch.Tensor], filename: Optional[str] = None
) -> YolactArchitecture:
    """
    Recognise the reference architecture of a state dict from its keys and shapes.

    yolact_base, yolact_im400 and yolact_im700 have identical weights; the reference file name
    (``<config>_<epoch>_<iter>.pth``) picks one when given, otherwise yolact_base is returned
    with the other two as ``alternatives``.

    Args:
        state_dict (Mapping[str, Tensor]): a reference state dict (legacy keys are ignored).
        filename (str, optional): the source file's name, used only to tell apart configs that
            share a weights layout, and in error messages.

    Returns:
        YolactArchitecture

    Raises:
        ValueError: no architecture matches exactly; the message lists a few missing,
            unexpected or wrongly shaped keys against the closest architecture.
    """
    state_dict = {k: v for k, v in state_dict.items() if not _is_legacy_key(k)}
    comparisons = [_compare(state_dict, layout) for layout in _LAYOUTS]
    best = min(comparisons, key=lambda c: c.num_errors)
    if best.num_errors:
        raise _mismatch_error(best, list(state_dict), filename or "The checkpoint")

    layout = best.layout
    _warn_if_name_disagrees(layout, filename)
    variant = _variant_from_filename(layout, filename)
    ambiguous = variant is None and len(layout.variants) > 1
    name, config = layout.variants[variant or 0]
    return YolactArchitecture(
        name=name,
        config_file=f"configs/{config}",
        backbone=layout.backbone_name,
        backbone_type=layout.backbone_type,
        num_classes=best.num_classes,
        num_prototypes=best.num_prototypes,
        alternatives=tuple(v[0] for v in layout.variants[1:]) if ambiguous else (),
    )


# ------------------------------------------------------------------------------------------------
# Renaming
# ------------------------------------------------------------------------------------------------
Replacement = Union[str, Callable[["re.Match"], str]]


def _res_block(match: "re.Match") -> str:
    return f"backbone.bottom_up.res{int(match[1]) + 2}.{match[2]}"


def _dark_stage(match: "re.Match") -> str:
    return f"backbone.bottom_up.dark{int(match[1]) + 1}"


# Each rule renames the prefix its pattern matches; the rest of the key is kept.
_RESNET_RULES: Tuple[Tuple[str, Replacement], ...] = (
    (r"backbone\.conv1\.", "backbone.bottom_up.stem.conv1."),
    (r"backbone\.bn1\.", "backbone.bottom_up.stem.conv1.norm."),
    (r"backbone\.layers\.(\d+)\.(\d+)\.downsample\.0\.", lambda m: f"{_res_block(m)}.shortcut."),
    (
        r"backbone\.layers\.(\d+)\.(\d+)\.downsample\.1\.",
        lambda m: f"{_res_block(m)}.shortcut.norm.",
    ),
    (r"backbone\.layers\.(\d+)\.(\d+)\.bn(\d)\.", lambda m: f"{_res_block(m)}.conv{m[3]}.norm."),
    # Also moves the DCN's conv2.bias and conv2.conv_offset_mask.* (kept inside our conv2).
    (r"backbone\.layers\.(\d+)\.(\d+)\.conv(\d)\.", lambda m: f"{_res_block(m)}.conv{m[3]}."),
)
_DARKNET_RULES: Tuple[Tuple[str, Replacement], ...] = (
    (r"backbone\._preconv\.0\.", "backbone.bottom_up.stem."),
    (r"backbone\._preconv\.1\.", "backbone.bottom_up.stem.norm."),
    (r"backbone\.layers\.(\d+)\.0\.0\.", lambda m: f"{_dark_stage(m)}.0."),
    (r"backbone\.layers\.(\d+)\.0\.1\.", lambda m: f"{_dark_stage(m)}.0.norm."),
    (
        r"backbone\.layers\.(\d+)\.(\d+)\.conv(\d)\.0\.",
        lambda m: f"{_dark_stage(m)}.{m[2]}.conv{m[3]}.",
    ),
    (
        r"backbone\.layers\.(\d+)\.(\d+)\.conv(\d)\.1\.",
        lambda m: f"{_dark_stage(m)}.{m[2]}.conv{m[3]}.norm.",
    ),
)
_COMMON_RULES: Tuple[Tuple[str, Replacement], ...] = (
    (r"fpn\.lat_layers\.(\d)\.", lambda m: f"backbone.fpn_lateral{5 - int(m[1])}."),
    (r"fpn\.pred_layers\.(\d)\.", lambda m: f"backbone.fpn_output{5 - int(m[1])}."),
    (r"fpn\.downsample_layers\.(\d)\.", lambda m: f"backbone.top_block.p{6 + int(m[1])}."),
    (r"proto_net\.([024])\.", lambda m: f"mask_branch.protonet.convs.{int(m[1]) // 2}."),
    (r"proto_net\.8\.", "mask_branch.protonet.upsample_conv."),
    (r"proto_net\.10\.", "mask_branch.protonet.predictor."),
    (r"prediction_layers\.0\.upfeature\.0\.", "head.upfeature."),
    (r"prediction_layers\.0\.bbox_layer\.", "head.bbox_pred."),
    (r"prediction_layers\.0\.conf_layer\.", "head.cls_score."),
    (r"prediction_layers\.0\.mask_layer\.", "head.coefficients."),
    (r"maskiou_net\.maskiou_net\.", "mask_branch.maskiou_net.net."),
    (r"semantic_seg_conv\.", "mask_branch.semantic_seg_conv."),
)


def _compile(rules):
    return tuple((re.compile(pattern), replacement) for pattern, replacement in rules)


_RULES = {
    "resnet": _compile(_RESNET_RULES + _COMMON_RULES),
    "darknet": _compile(_DARKNET_RULES + _COMMON_RULES),
}


def _rename(key: str, rules) -> str:
    for pattern, replacement in rules:
        match = pattern.match(key)
        if match:
            new = replacement(match) if callable(replacement) else match.expand(replacement)
            return new + key[match.end() :]
    raise ValueError(f"No yolact_d2 name for the reference key {key!r}.")


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], architecture: Optional[YolactArchitecture] = None
) -> "OrderedDict[str, torch.Tensor]":
    """
    Rename every key of a reference state dict to the yolact_d2 model's names. Legacy keys
    (see :func:`drop_legacy_keys`) are dropped; tensors are not copied.

    Args:
        state_dict (Mapping[str, Tensor]): a reference state dict.
        architecture (YolactArchitecture, optional): from :func:`detect_architecture`, which
            is called when it is not given (and validates the keys).

    Returns:
        OrderedDict[str, Tensor]: the renamed state dict, in the source's order.
    """
    state_dict = drop_legacy_keys(state_dict)
    if architecture is None:
        architecture = detect_architecture(state_dict)
    rules = _RULES[architecture.backbone_type]
    converted = OrderedDict((_rename(k, rules), v) for k, v in state_dict.items())
    if len(converted) != len(state_dict):
        raise ValueError("Two reference keys map to the same yolact_d2 key.")
    if any(k.startswith("mask_branch.semantic_seg_conv.") for k in converted):
        logger.info(
            "Kept the training-only semantic_seg_conv weights; a model built with "
            "MODEL.YOLACT.LOSS.SEMANTIC_SEG_WEIGHT 0 reports them as unexpected keys (harmless)."
        )
    return converted


# ------------------------------------------------------------------------------------------------
# ImageNet backbone files (what the reference's configs load before training)
# ------------------------------------------------------------------------------------------------
def backbone_file_type(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """
    Recognises the ImageNet backbone files that the reference trains from.

    Returns:
        str or None: "resnet" for torchvision ResNet names (``conv1.*``, ``bn1.*``,
        ``layer1.*``..``layer4.*``, ``fc.*``: torchvision's ``resnet50-19c8e357.pth`` and
        ``resnet101-5d3b4d8f.pth``, the reference's ``resnet101_reducedfc.pth``), "darknet" for
        the reference's ``darknet53.pth`` (its ``DarkNetBackbone`` names: ``_preconv.*``,
        ``layers.*``), None for anything else.
    """
    if "conv1.weight" in state_dict and any(k.startswith("layer1.") for k in state_dict):
        return "resnet"
    if any(k.startswith("_preconv.") for k in state_dict) and any(
        k.startswith("layers.") for k in state_dict
    ):
        return "darknet"
    return None


def _reference_backbone_key(key: str, backbone_type: str) -> str:
    """
    The name a backbone file's key has inside a reference YOLACT model: the reference's
    ``init_backbone`` turns torchvision's ``layer<N>.`` into ``layers.<N-1>.``; both backbones
    then sit under ``backbone.``.
    """
    if backbone_type == "resnet":
        key = re.sub(r"^layer(\d)\.", lambda m: f"layers.{int(m[1]) - 1}.", key)
    return "backbone." + key


def convert_backbone_state_dict(
    state_dict: Mapping[str, torch.Tensor], backbone_type: Optional[str] = None
) -> Tuple["OrderedDict[str, torch.Tensor]", List[str]]:
    """
    Renames an ImageNet backbone file (see :func:`backbone_file_type`) to the yolact_d2 model's
    names (``backbone.bottom_up.*``) the way the reference loads it: its ``init_backbone``
    renaming, then the same rules as :func:`convert_state_dict`. Keys that have no place in a
    YOLACT backbone (the ImageNet classifier ``fc.*``, anything else unknown) are dropped.

    Args:
        state_dict (Mapping[str, Tensor]): the file's state dict.
        backbone_type (str, optional): "resnet" or "darknet"; recognised when not given.

    Returns:
        tuple[OrderedDict[str, Tensor], list[str]]: the renamed tensors (source order, not
        copied) and the dropped keys.
    """
    backbone_type = backbone_type or backbone_file_type(state_dict)
    if backbone_type not in _RULES:
        raise ValueError("Not an ImageNet ResNet or DarkNet-53 backbone state dict.")
    rules = _RULES[backbone_type]
    renamed, dropped = OrderedDict(), []
    for key, value in state_dict.items():
        try:
            new_key = _rename(_reference_backbone_key(key, backbone_type), rules)
        except ValueError:
            dropped.append(key)
            continue
        if not new_key.startswith("backbone.bottom_up."):
            dropped.append(key)
            continue
        renamed[new_key] = value
    return renamed, dropped


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
def _check_destination(path: str) -> None:
    if os.path.isdir(path):
        raise ValueError(f"Output {path} is a directory; give a file name ending in .pth.")
    if path.endswith((".pkl", ".pyth")):
        raise ValueError(
            f"Output {path}: Detectron2 reads .pkl / .pyth files as other formats; use .pth."
        )


def _atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` through :func:`atomic_open`, reporting failed writes as ``OSError``."""
    with atomic_open(path) as f:
        try:
            torch.save(obj, f)
        except RuntimeError as e:  # torch reports failed writes (e.g. disk full) this way
            raise OSError(f"Cannot write {path}: {_first_line(e)}") from e


def save_converted_checkpoint(
    state_dict: Mapping[str, torch.Tensor], architecture: YolactArchitecture, path: str
) -> None:
    """
    Write a converted state dict as a Detectron2 checkpoint, atomically: ``path`` is either
    left untouched or replaced by the complete file.

    The file holds ``{"model": state_dict, "__author__": "yolact_d2", "matching_heuristics":
    False, "yolact_architecture": name, "yolact_config": config file}``;
    :class:`DetectionCheckpointer` reads "model" and ignores the rest.

    Args:
        state_dict (Mapping[str, Tensor]): from :func:`convert_state_dict`.
        architecture (YolactArchitecture): from :func:`detect_architecture`.
        path (str): output file (``.pth``); missing parent directories are created.
    """
    _check_destination(path)
    checkpoint = {
        "model": OrderedDict(state_dict),
        "__author__": "yolact_d2",
        "matching_heuristics": False,
        "yolact_architecture": architecture.name,
        "yolact_config": architecture.config_file,
    }
    _atomic_torch_save(checkpoint, path)


def convert_yolact_checkpoint(src: str, dst: str) -> YolactArchitecture:
    """
    Convert the reference checkpoint ``src`` into the yolact_d2 checkpoint ``dst``.
    Every check runs before writing; on any error ``dst`` is left as it was.

    Args:
        src (str): reference checkpoint, e.g. "yolact_im700_54_800000.pth".
        dst (str): output ``.pth`` file.

    Returns:
        YolactArchitecture: the detected architecture (``config_file`` is the config to use).

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError: ``src`` is unreadable, not a checkpoint, or no YOLACT architecture matches.
        OSError: ``dst`` cannot be written.
    """
    _check_destination(dst)
    state_dict = drop_legacy_keys(load_yolact_state_dict(src))
    architecture = detect_architecture(state_dict, filename=src)
    converted = convert_state_dict(state_dict, architecture)
    save_converted_checkpoint(converted, architecture, dst)
    logger.debug(f"Wrote {len(converted)} tensors for {architecture.description} to {dst}.")
    return architecture
