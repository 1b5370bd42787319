# Copyright (c) yolact_d2 contributors.
"""
The reference's architectures, recognised from a checkpoint's key names and shapes.

The expected keys and shapes of each architecture are not written down here: they are those of
the yolact_d2 model built (on the meta device, without memory or initialisation) from the
architecture's config, named as the reference names them
(:func:`~yolact_d2.checkpoint.key_names.reference_key`). So truncated files, foreign checkpoints
and shape mismatches are recognised before anything is written.
"""

import functools
import logging
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .key_names import reference_key
from .loading import is_legacy_key, quote

__all__ = [
    "YolactArchitecture",
    "LAYOUTS",
    "describe_yolact_d2_state_dict",
    "detect_architecture",
    "expected_keys",
    "reference_config_name",
]

logger = logging.getLogger(__name__)

Shape = Tuple[int, ...]
KeySpec = Dict[str, Shape]

# Hyper-parameters of the reference that the checkpoint's shapes may override.
_DEFAULT_NUM_CLASSES = 80
_DEFAULT_NUM_PROTOTYPES = 32


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


LAYOUTS = (
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
def expected_keys(
    layout: _Layout, num_classes: int, num_prototypes: int, semantic_seg: bool
) -> KeySpec:
    """
    Every key (and its shape) of a reference checkpoint with the given layout: those of the
    yolact_d2 model of the layout's config, built on the meta device, in reference names.
    """
    return dict(__expected_keys_cached(layout, num_classes, num_prototypes, semantic_seg))


@functools.lru_cache(maxsize=32)
def __expected_keys_cached(layout, num_classes, num_prototypes, semantic_seg):
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
    return tuple(
        (reference_key(key, layout.backbone_type), tuple(tensor.shape))
        for key, tensor in model.state_dict().items()
    )


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
    expected = expected_keys(layout, num_classes, num_prototypes, semantic_seg)
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


def _is_foreign(comparison: _Comparison, num_keys: int) -> bool:
    """Whether even the closest layout matches less than half of the checkpoint's keys."""
    matched = num_keys - len(comparison.unexpected) - len(comparison.wrong_shapes)
    return matched < num_keys / 2


def _foreign_error(keys: Sequence[str], source: str) -> ValueError:
    message = (
        f"{source} is not a checkpoint of the reference YOLACT (dbolya/yolact): it matches "
        f"none of its architectures. Its keys: {quote(keys)}."
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
            lines.append(f"  {len(items)} key(s) {label}: {quote(items)}")
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
    for other in LAYOUTS:
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
    state_dict = {k: v for k, v in state_dict.items() if not is_legacy_key(k)}
    comparisons = [_compare(state_dict, layout) for layout in LAYOUTS]
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


def reference_config_name(config_file: str) -> Optional[Tuple[str, str]]:
    """
    The reference config of a yolact_d2 config file, by file name.

    Returns:
        tuple[str, str] or None: (reference config name, e.g. "yolact_resnet50", its backbone
        type "resnet" or "darknet"); None for configs that have no reference counterpart.
    """
    name = os.path.basename(config_file)
    for layout in LAYOUTS:
        for reference, ours in layout.variants:
            if ours == name:
                return reference, layout.backbone_type
    return None


# ------------------------------------------------------------------------------------------------
# yolact_d2 state dicts (a model's, a converted or a Detectron2 training checkpoint's)
# ------------------------------------------------------------------------------------------------
_COUNTER = "num_batches_tracked"


def _reference_layout_of(state_dict: Mapping[str, torch.Tensor]) -> Optional[_Layout]:
    """
    The reference layout whose keys and shapes a yolact_d2-named state dict has exactly (BatchNorm
    counters and the training-only semantic-segmentation conv aside); None if none.
    """
    darknet = any(k.startswith("backbone.bottom_up.dark") for k in state_dict)
    backbone_type = "darknet" if darknet else "resnet"
    renamed = {}
    for key, value in state_dict.items():
        if key.endswith(_COUNTER):
            continue
        try:
            renamed[reference_key(key, backbone_type)] = value
        except ValueError:  # a key the reference has no name for
            return None
    for layout in LAYOUTS:
        if layout.backbone_type != backbone_type:
            continue
        comparison = _compare(renamed, layout)
        missing = [k for k in comparison.missing if not k.endswith(_COUNTER)]
        if not (missing or comparison.unexpected or comparison.wrong_shapes):
            return layout
    return None


def _backbone_description(keys: Sequence[str]) -> str:
    """E.g. "ResNet-101-FPN", "ResNet-50-FPN with DCNv2", "DarkNet-53-FPN", from the key names."""
    blocks: Dict[Tuple[str, int], set] = {}
    for key in keys:
        match = re.match(r"backbone\.bottom_up\.(res|dark)(\d+)\.(\d+)\.", key)
        if match:
            blocks.setdefault((match[1], int(match[2])), set()).add(int(match[3]))
    resnet = [len(b) for (kind, _), b in sorted(blocks.items()) if kind == "res"]
    darknet = [len(b) - 1 for (kind, _), b in sorted(blocks.items()) if kind == "dark"]
    if resnet:
        # 3 convs per bottleneck block, 2 per basic block, plus the stem and the classifier.
        bottleneck = any(k.startswith("backbone.bottom_up.res2.0.conv3.") for k in keys)
        name = f"ResNet-{(3 if bottleneck else 2) * sum(resnet) + 2}"
    elif darknet:
        # The stem, one strided conv per stage, 2 convs per residual block, the classifier.
        name = f"DarkNet-{1 + len(darknet) + 2 * sum(darknet) + 1}"
    else:
        name = "an unknown backbone"
    if any(k.startswith("backbone.fpn_lateral") for k in keys):
        name += "-FPN"
    if any(".conv_offset" in k for k in keys):
        name += " with DCNv2"
    return name


def describe_yolact_d2_state_dict(state_dict: Mapping[str, torch.Tensor]) -> str:
    """
    The architecture of a YOLACT state dict in yolact_d2's names (a model's ``state_dict()``, a
    converted or a Detectron2 training checkpoint), from its keys and shapes, in one line: the
    reference config when it has one of the reference's layouts (whatever its number of classes
    or prototypes), else "YOLACT" or "YOLACT++" (with a mask-IoU net); then the backbone, the
    priors per feature-map cell and the prototypes.

    Examples: "yolact_resnet50 (ResNet-50-FPN, 3 priors per cell, 32 prototypes)",
    "yolact_base/im400/im700 (ResNet-101-FPN, 3 priors per cell, 32 prototypes)",
    "YOLACT (ResNet-18-FPN, 3 priors per cell, 32 prototypes)".

    Args:
        state_dict (Mapping[str, Tensor]): yolact_d2 names (``backbone.bottom_up.*``,
            ``head.*``, ``mask_branch.*``).
    """
    keys = list(state_dict)
    details = [_backbone_description(keys)]
    bbox = _shape_of(state_dict, "head.bbox_pred.weight")
    if bbox:
        details.append(f"{bbox[0] // 4} priors per cell")
    prototypes = _shape_of(state_dict, "mask_branch.protonet.predictor.weight")
    if prototypes:
        details.append(f"{prototypes[0]} prototypes")
    maskiou = any(k.startswith("mask_branch.maskiou_net.") for k in keys)
    if maskiou:
        details.append("mask-IoU net")
    layout = _reference_layout_of(state_dict)
    if layout is not None:
        names = [name for name, _ in layout.variants]
        name = "/".join(names[:1] + [n.replace("yolact_", "", 1) for n in names[1:]])
    else:
        name = "YOLACT++" if maskiou else "YOLACT"
    return f"{name} ({', '.join(details)})"
