# Copyright (c) yolact_d2 contributors.
"""
Conversion of the reference YOLACT / YOLACT++ checkpoints (dbolya/yolact) to yolact_d2.

A reference checkpoint is a plain ``state_dict``. The converter reads it safely (``weights_only``),
recognises the architecture from key names and shapes, renames every key to the yolact_d2 module
names and writes a Detectron2-style checkpoint atomically, which
:class:`detectron2.checkpoint.DetectionCheckpointer` loads as is.

Validation compares the source with the exact keys and shapes each reference architecture has.
They are not described here: they are those of the yolact_d2 model built (on the meta device,
without memory or initialisation) from the architecture's config, named as the reference names
them (:func:`reference_key`, the renaming rules run backwards). So truncated files, foreign
checkpoints and shape mismatches are rejected before anything is written.
"""

import functools
import logging
import os
import re
import zipfile
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
    "to_reference_state_dict",
    "reference_config_name",
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
    num_priors: int = 3  # priors per feature-map cell (A)

    @property
    def name(self) -> str:
        return self.variants[0][0]


_LAYOUTS = (
    _Layout((("yolact_resnet50", "yolact_R_50_FPN_550.yaml"),), "resnet", "ResNet-50-FPN"),
    _Layout(
        (
            ("yolact_base", "yolact_R_101_FPN_550.yaml"),
            ("yolact_im400", "yolact_R_101_FPN_400.yaml"),
            ("yolact_im700", "yolact_R_101_FPN_700.yaml"),
        ),
        "resnet",
        "ResNet-101-FPN",
    ),
    _Layout((("yolact_darknet53", "yolact_DarkNet53_FPN_550.yaml"),), "darknet", "DarkNet-53-FPN"),
    _Layout(
        (("yolact_plus_resnet50", "yolact_plus_R_50_FPN_550.yaml"),),
        "resnet",
        "ResNet-50-FPN with DCNv2",
        num_priors=9,
    ),
    _Layout(
        (("yolact_plus_base", "yolact_plus_R_101_FPN_550.yaml"),),
        "resnet",
        "ResNet-101-FPN with DCNv2",
        num_priors=9,
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
def _expected_keys(
    layout: _Layout, num_classes: int, num_prototypes: int, semantic_seg: bool
) -> KeySpec:
    """
    Every key (and its shape) of a reference checkpoint with the given layout: those of the
    yolact_d2 model of the layout's config, built on the meta device, in reference names.
    """
    return dict(_expected_keys_cached(layout, num_classes, num_prototypes, semantic_seg))


@functools.lru_cache(maxsize=32)
def _expected_keys_cached(layout, num_classes, num_prototypes, semantic_seg):
    from detectron2.modeling import build_model

    from yolact_d2.config import get_yolact_cfg
    from yolact_d2.model_zoo import get_config_file

    cfg = get_yolact_cfg()
    cfg.merge_from_file(get_config_file(layout.variants[0][1]))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "meta"
    cfg.MODEL.YOLACT.NUM_CLASSES = num_classes
    cfg.MODEL.YOLACT.NUM_PROTOTYPES = num_prototypes
    if not semantic_seg:
        cfg.MODEL.YOLACT.LOSS.SEMANTIC_SEG_WEIGHT = 0.0
    with torch.device("meta"):
        model = build_model(cfg)
    rules = _REFERENCE_RULES[layout.backbone_type]
    return tuple(
        (reference_key(key, rules), tuple(tensor.shape))
        for key, tensor in model.state_dict().items()
    )


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


def _verify_zip_checksums(path: str) -> None:
    """
    ``torch.save`` files are zip archives with a CRC-32 per record, which ``torch.load`` does
    not check: a flipped bit in tensor data would load as a different weight. Every record's
    checksum is verified here (legacy non-zip files have none to check).
    """
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise ValueError(f"checksum mismatch in its record {bad!r}")


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
        _verify_zip_checksums(path)
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated / corrupt / foreign files
        raise ValueError(
            f"Cannot read {path} as a PyTorch checkpoint ({_first_line(e)}). The file may be "
            f"truncated or corrupt (re-download it), or it is not a .pth checkpoint."
        ) from e
    state_dict = _unwrap_state_dict(obj)
    _check_tensor_mapping(state_dict, path)
    _check_dtypes(state_dict, path)
    return dict(state_dict)


def _check_dtypes(state_dict: Mapping[str, torch.Tensor], path: str) -> None:
    """The reference's dtypes: float32 tensors, int64 ``num_batches_tracked`` counters."""
    bad = []
    for key, value in state_dict.items():
        expected = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        if value.dtype != expected:
            bad.append(f"{key} is {str(value.dtype).replace('torch.', '')}")
    if bad:
        examples = "; ".join(bad[:_MAX_QUOTED])
        raise ValueError(
            f"{path} does not hold the reference's tensor types (float32 weights, int64 "
            f"BatchNorm counters): {len(bad)} tensor(s) differ, e.g. {examples}."
        )


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


# The same renaming backwards (yolact_d2 name -> reference name), to name the keys a model has
# as the reference does; tests check that both directions agree on every architecture's keys.
def _res_layer(match: "re.Match") -> str:
    return f"backbone.layers.{int(match[1]) - 2}.{match[2]}"


def _dark_layer(match: "re.Match") -> str:
    return f"backbone.layers.{int(match[1]) - 1}.{match[2]}"


_RESNET_REFERENCE: Tuple[Tuple[str, Replacement], ...] = (
    (r"backbone\.bottom_up\.stem\.conv1\.norm\.", "backbone.bn1."),
    (r"backbone\.bottom_up\.stem\.conv1\.", "backbone.conv1."),
    (
        r"backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.norm\.",
        lambda m: f"{_res_layer(m)}.downsample.1.",
    ),
    (
        r"backbone\.bottom_up\.res(\d)\.(\d+)\.shortcut\.",
        lambda m: f"{_res_layer(m)}.downsample.0.",
    ),
    (
        r"backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.norm\.",
        lambda m: f"{_res_layer(m)}.bn{m[3]}.",
    ),
    (r"backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.", lambda m: f"{_res_layer(m)}.conv{m[3]}."),
)
_DARKNET_REFERENCE: Tuple[Tuple[str, Replacement], ...] = (
    (r"backbone\.bottom_up\.stem\.norm\.", "backbone._preconv.1."),
    (r"backbone\.bottom_up\.stem\.", "backbone._preconv.0."),
    (r"backbone\.bottom_up\.dark(\d)\.(0)\.norm\.", lambda m: f"{_dark_layer(m)}.1."),
    (r"backbone\.bottom_up\.dark(\d)\.(0)\.", lambda m: f"{_dark_layer(m)}.0."),
    (
        r"backbone\.bottom_up\.dark(\d)\.(\d+)\.conv(\d)\.norm\.",
        lambda m: f"{_dark_layer(m)}.conv{m[3]}.1.",
    ),
    (
        r"backbone\.bottom_up\.dark(\d)\.(\d+)\.conv(\d)\.",
        lambda m: f"{_dark_layer(m)}.conv{m[3]}.0.",
    ),
)
_COMMON_REFERENCE: Tuple[Tuple[str, Replacement], ...] = (
    (r"backbone\.fpn_lateral(\d)\.", lambda m: f"fpn.lat_layers.{5 - int(m[1])}."),
    (r"backbone\.fpn_output(\d)\.", lambda m: f"fpn.pred_layers.{5 - int(m[1])}."),
    (r"backbone\.top_block\.p(\d)\.", lambda m: f"fpn.downsample_layers.{int(m[1]) - 6}."),
    (r"mask_branch\.protonet\.convs\.(\d)\.", lambda m: f"proto_net.{2 * int(m[1])}."),
    (r"mask_branch\.protonet\.upsample_conv\.", "proto_net.8."),
    (r"mask_branch\.protonet\.predictor\.", "proto_net.10."),
    (r"head\.upfeature\.", "prediction_layers.0.upfeature.0."),
    (r"head\.bbox_pred\.", "prediction_layers.0.bbox_layer."),
    (r"head\.cls_score\.", "prediction_layers.0.conf_layer."),
    (r"head\.coefficients\.", "prediction_layers.0.mask_layer."),
    (r"mask_branch\.maskiou_net\.net\.", "maskiou_net.maskiou_net."),
    (r"mask_branch\.semantic_seg_conv\.", "semantic_seg_conv."),
)
_REFERENCE_RULES = {
    "resnet": _compile(_RESNET_REFERENCE + _COMMON_REFERENCE),
    "darknet": _compile(_DARKNET_REFERENCE + _COMMON_REFERENCE),
}


def reference_key(key: str, rules) -> str:
    """The reference's name of the yolact_d2 key ``key`` (``rules``: a ``_REFERENCE_RULES``)."""
    new = _apply_rules(key, rules)
    if new is None:
        raise ValueError(f"No reference name for the yolact_d2 key {key!r}.")
    return new


def _apply_rules(key: str, rules) -> Optional[str]:
    """``key`` renamed by the first rule whose pattern matches its start; None if none does."""
    for pattern, replacement in rules:
        match = pattern.match(key)
        if match:
            new = replacement(match) if callable(replacement) else match.expand(replacement)
            return new + key[match.end() :]
    return None


def _rename(key: str, rules) -> str:
    new = _apply_rules(key, rules)
    if new is None:
        raise ValueError(f"No yolact_d2 name for the reference key {key!r}.")
    return new


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


def reference_config_name(config_file: str) -> Optional[Tuple[str, str]]:
    """
    The reference config of a yolact_d2 config file, by file name.

    Returns:
        tuple[str, str] or None: (reference config name, e.g. "yolact_resnet50", its backbone
        type "resnet" or "darknet"); None for configs that have no reference counterpart.
    """
    name = os.path.basename(config_file)
    for layout in _LAYOUTS:
        for reference, ours in layout.variants:
            if ours == name:
                return reference, layout.backbone_type
    return None


def to_reference_state_dict(
    state_dict: Mapping[str, torch.Tensor], backbone_type: str
) -> "OrderedDict[str, torch.Tensor]":
    """
    The inverse of :func:`convert_state_dict`: a yolact_d2 model's state dict in the reference's
    names (what the reference's ``Yolact.load_weights`` reads). Tensors are not copied.

    Args:
        state_dict (Mapping[str, Tensor]): a yolact_d2 YOLACT state dict.
        backbone_type (str): "resnet" or "darknet".
    """
    if backbone_type not in _REFERENCE_RULES:
        raise ValueError(
            f"backbone_type must be one of {sorted(_REFERENCE_RULES)}, got {backbone_type!r}"
        )
    rules = _REFERENCE_RULES[backbone_type]
    return OrderedDict((reference_key(k, rules), v) for k, v in state_dict.items())


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
        new_key = _apply_rules(_reference_backbone_key(key, backbone_type), rules)
        if new_key is None or not new_key.startswith("backbone.bottom_up."):
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
