# Copyright (c) yolact_d2 contributors.
"""
The names of the reference's weights (dbolya/yolact) and of yolact_d2's, in one table read in
both directions: reference checkpoints and ImageNet backbone files are renamed to our modules
(:func:`convert_state_dict`, :func:`convert_backbone_state_dict`), and our models' weights to the
reference's names (:func:`to_reference_state_dict`: the expected keys of every architecture, and
the weights the benchmark gives the original implementation).
"""

import logging
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple

import torch

__all__ = [
    "KEY_TABLES",
    "yolact_d2_key",
    "reference_key",
    "to_reference_state_dict",
    "backbone_file_type",
    "convert_backbone_state_dict",
]

logger = logging.getLogger(__name__)

# (reference prefix, yolact_d2 prefix) of every weight; the rest of a key is kept. In a prefix,
# "{i}" is a number, "{i+N}" that number plus N and "{N-i}" N minus it (so each row also reads
# backwards). A key takes the row whose prefix matches the longest part of it.
_RESNET_ROWS = (
    ("backbone.conv1.", "backbone.bottom_up.stem.conv1."),
    ("backbone.bn1.", "backbone.bottom_up.stem.conv1.norm."),
    ("backbone.layers.{i}.{j}.downsample.0.", "backbone.bottom_up.res{i+2}.{j}.shortcut."),
    ("backbone.layers.{i}.{j}.downsample.1.", "backbone.bottom_up.res{i+2}.{j}.shortcut.norm."),
    ("backbone.layers.{i}.{j}.bn{k}.", "backbone.bottom_up.res{i+2}.{j}.conv{k}.norm."),
    # Also moves the DCN's conv2.bias and conv2.conv_offset_mask.* (kept inside our conv2).
    ("backbone.layers.{i}.{j}.conv{k}.", "backbone.bottom_up.res{i+2}.{j}.conv{k}."),
)
_DARKNET_ROWS = (
    ("backbone._preconv.0.", "backbone.bottom_up.stem."),
    ("backbone._preconv.1.", "backbone.bottom_up.stem.norm."),
    ("backbone.layers.{i}.0.0.", "backbone.bottom_up.dark{i+1}.0."),
    ("backbone.layers.{i}.0.1.", "backbone.bottom_up.dark{i+1}.0.norm."),
    ("backbone.layers.{i}.{j}.conv{k}.0.", "backbone.bottom_up.dark{i+1}.{j}.conv{k}."),
    ("backbone.layers.{i}.{j}.conv{k}.1.", "backbone.bottom_up.dark{i+1}.{j}.conv{k}.norm."),
)
_COMMON_ROWS = (
    ("fpn.lat_layers.{i}.", "backbone.fpn_lateral{5-i}."),
    ("fpn.pred_layers.{i}.", "backbone.fpn_output{5-i}."),
    ("fpn.downsample_layers.{i}.", "backbone.top_block.p{i+6}."),
    ("proto_net.0.", "mask_branch.protonet.convs.0."),
    ("proto_net.2.", "mask_branch.protonet.convs.1."),
    ("proto_net.4.", "mask_branch.protonet.convs.2."),
    ("proto_net.8.", "mask_branch.protonet.upsample_conv."),
    ("proto_net.10.", "mask_branch.protonet.predictor."),
    ("prediction_layers.0.upfeature.0.", "head.upfeature."),
    ("prediction_layers.0.bbox_layer.", "head.bbox_pred."),
    ("prediction_layers.0.conf_layer.", "head.cls_score."),
    ("prediction_layers.0.mask_layer.", "head.coefficients."),
    ("maskiou_net.maskiou_net.", "mask_branch.maskiou_net.net."),
    ("semantic_seg_conv.", "mask_branch.semantic_seg_conv."),
)

_FIELD = re.compile(r"\{(?:(\d+)-)?([a-z])(?:\+(\d+))?\}")


class _Prefix:
    """
    One side of a row: matches a key's start, reads its fields as the *reference's* numbers,
    and writes them in its own form.
    """

    def __init__(self, text: str):
        self.text = text
        pattern, self.fields = "", []
        position = 0
        for field in _FIELD.finditer(text):
            pattern += re.escape(text[position : field.start()]) + rf"(?P<{field[2]}>\d+)"
            minus, name, plus = field[1], field[2], field[3]
            self.fields.append((name, int(minus) if minus else None, int(plus or 0)))
            position = field.end()
        self.regex = re.compile(pattern + re.escape(text[position:]))

    def read(self, match: "re.Match") -> Dict[str, int]:
        values = {}
        for name, minus, plus in self.fields:
            number = int(match[name])
            values[name] = minus - number if minus is not None else number - plus
        return values

    def write(self, values: Dict[str, int]) -> str:
        def value(field: "re.Match") -> str:
            number = values[field[2]]
            return str(int(field[1]) - number if field[1] else number + int(field[3] or 0))

        return _FIELD.sub(value, self.text)


def _table(rows) -> Tuple[Tuple[_Prefix, _Prefix], ...]:
    return tuple((_Prefix(reference), _Prefix(ours)) for reference, ours in rows)


# backbone type -> ((reference prefix, yolact_d2 prefix), ...)
KEY_TABLES = {
    "resnet": _table(_RESNET_ROWS + _COMMON_ROWS),
    "darknet": _table(_DARKNET_ROWS + _COMMON_ROWS),
}


def _check_backbone_type(backbone_type: str) -> None:
    if backbone_type not in KEY_TABLES:
        raise ValueError(
            f"backbone_type must be one of {sorted(KEY_TABLES)}, got {backbone_type!r}"
        )


def _rename(key: str, backbone_type: str, to_ours: bool) -> Optional[str]:
    """``key`` renamed by the row whose prefix matches the longest start of it; None if none."""
    if backbone_type not in KEY_TABLES:
        raise ValueError(
            f"backbone_type must be one of {sorted(KEY_TABLES)}, got {backbone_type!r}"
        )
    best = None
    for reference, ours in KEY_TABLES[backbone_type]:
        source, target = (reference, ours) if to_ours else (ours, reference)
        match = source.regex.match(key)
        if match and (best is None or match.end() > best[0].end()):
            best = (match, source, target)
    if best is None:
        return None
    match, source, target = best
    return target.write(source.read(match)) + key[match.end() :]


def yolact_d2_key(key: str, backbone_type: str) -> Optional[str]:
    """Our name of the reference key ``key`` (None for keys no row names)."""
    return _rename(key, backbone_type, to_ours=True)


def reference_key(key: str, backbone_type: str) -> str:
    """The reference's name of our key ``key``."""
    new = _rename(key, backbone_type, to_ours=False)
    if new is None:
        raise ValueError(f"No reference name for the yolact_d2 key {key!r}.")
    return new


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
    _check_backbone_type(backbone_type)
    return OrderedDict((reference_key(k, backbone_type), v) for k, v in state_dict.items())


# ImageNet backbone files (what the reference's configs load before training)
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
    if backbone_type not in KEY_TABLES:
        raise ValueError("Not an ImageNet ResNet or DarkNet-53 backbone state dict.")
    renamed, dropped = OrderedDict(), []
    for key, value in state_dict.items():
        new_key = yolact_d2_key(_reference_backbone_key(key, backbone_type), backbone_type)
        if new_key is None or not new_key.startswith("backbone.bottom_up."):
            dropped.append(key)
            continue
        renamed[new_key] = value
    return renamed, dropped
