# Copyright (c) yolact_d2 contributors.
"""
Detectron2's checkpointer with what YOLACT training needs on top: torchvision ResNet weights,
explicit re-initialisation of the class-dependent layers when fine-tuning to a different number
of classes, clear errors for unusable files, and atomic saves.
"""

import logging
import numpy as np
import os
from collections.abc import Mapping
from typing import Dict, List, Tuple
from urllib.parse import urlparse

import torch
from fvcore.common.checkpoint import _strip_prefix_if_present

from detectron2.checkpoint import DetectionCheckpointer

from yolact_d2.checkpoint.key_names import backbone_file_type, convert_backbone_state_dict
from yolact_d2.modeling.mask_branch import upgrade_legacy_keys
from yolact_d2.modeling.maskiou import MaskIoUNet
from yolact_d2.utils.file_io import atomic_open

__all__ = ["CLASS_DEPENDENT_LAYERS", "YolactCheckpointer", "non_finite_entries"]

logger = logging.getLogger(__name__)

# Layers whose output size depends on MODEL.YOLACT.NUM_CLASSES: the head's class logits
# (A * (C + 1) channels), the training-only semantic-segmentation conv (C) and YOLACT++'s last
# mask-IoU conv (C). They are the only ones re-initialised when fine-tuning to another C.
CLASS_DEPENDENT_LAYERS = (
    "head.cls_score",
    "mask_branch.semantic_seg_conv",
    f"mask_branch.maskiou_net.{MaskIoUNet.CLASS_LAYER}",
)

# Where the ImageNet backbone lives in a YOLACT model.
_BOTTOM_UP = "backbone.bottom_up."


def _is_original_yolact(state_dict: Mapping) -> bool:
    """Whether ``state_dict`` is an unconverted dbolya/yolact checkpoint (plain state dict)."""
    prefixes = ("proto_net.", "prediction_layers.", "fpn.lat_layers.")
    return any(k.startswith(prefixes) for k in state_dict)


class YolactCheckpointer(DetectionCheckpointer):
    """
    A :class:`DetectionCheckpointer` for YOLACT models. ``MODEL.WEIGHTS`` (or ``load(path)``)
    accepts:

    * Detectron2 ``.pkl`` files: ImageNet backbones from the Detectron2 model zoo (Caffe2 names)
      or from ``convert-torchvision-to-d2.py``; Detectron2's name-matching heuristics put them
      under ``backbone.bottom_up``;
    * the ImageNet backbone files the reference trains from: torchvision ResNet state dicts
      (``resnet50-19c8e357.pth``, ``resnet101-5d3b4d8f.pth``, the reference's
      ``resnet101_reducedfc.pth``, or ``torchvision.models.resnet50().state_dict()``) and the
      reference's ``darknet53.pth``, local or by URL (downloaded once and cached by Detectron2's
      ``PathManager`` under ``$FVCORE_CACHE``, default ``~/.torch/iopath_cache``): renamed
      explicitly onto ``backbone.bottom_up`` as the reference's ``init_backbone`` does (see
      :func:`~yolact_d2.checkpoint.key_names.convert_backbone_state_dict`), the classifier
      dropped;
    * converted YOLACT checkpoints (a dict with "model" in Detectron2 names, ``.pth`` or ``.pkl``);
    * Detectron2 training checkpoints (model, optimizer, scheduler, iteration), for resuming.

    When the checkpoint was trained with another number of classes, the layers in
    :data:`CLASS_DEPENDENT_LAYERS` keep their fresh initialisation (logged); any other shape
    mismatch is skipped with fvcore's warning. A missing file raises FileNotFoundError and a file
    that is not a checkpoint raises ValueError, both naming the file.

    :meth:`save` writes atomically: an interrupted save leaves neither a partial checkpoint nor a
    ``last_checkpoint`` pointing at one.
    """

    # ------------------------------------------------------------------------------------------
    # Loading
    # ------------------------------------------------------------------------------------------
    def load(self, path, *args, **kwargs):
        """Same as :meth:`DetectionCheckpointer.load`, with a clear error for a missing file."""
        if path and not urlparse(path).scheme:
            local_path = path.split("?", 1)[0]
            if not os.path.isfile(local_path):
                raise FileNotFoundError(f"Checkpoint file '{local_path}' does not exist.")
        try:
            return super().load(path, *args, **kwargs)
        finally:
            # DetectionCheckpointer only resets this after a successful load; without the reset
            # a failed load would make every later load() fail its assertion.
            self._parsed_url_during_load = None

    def _load_file(self, filename: str):
        try:
            loaded = super()._load_file(filename)
        except Exception as e:
            raise ValueError(
                f"Cannot read '{filename}' as a checkpoint ({type(e).__name__}: {e})."
            ) from e
        model_state = loaded.get("model") if isinstance(loaded, Mapping) else None
        if not _is_state_dict(model_state):
            raise ValueError(
                f"'{filename}' is not a checkpoint: expected a state dict (name -> tensor) or a "
                f"dict with a 'model' state dict, got {type(loaded).__name__}."
            )
        if _is_original_yolact(model_state):
            raise ValueError(
                f"'{filename}' is an original dbolya/yolact checkpoint; convert it first: "
                f"python tools/convert_yolact_weights.py {filename} <output>.pth"
            )
        # The "module." of (Distributed)DataParallel, removed as fvcore's loader removes it.
        _strip_prefix_if_present(model_state, "module.")
        backbone_type = backbone_file_type(model_state)
        if backbone_type is not None:
            return self._from_backbone_file(filename, model_state, backbone_type)
        return loaded

    def _from_backbone_file(self, filename: str, state_dict: Dict, backbone_type: str) -> Dict:
        renamed, dropped = convert_backbone_state_dict(state_dict, backbone_type)
        model_keys = self.model.state_dict().keys()
        unused = sorted(k for k in renamed if k not in model_keys)
        renamed = {k: v for k, v in renamed.items() if k in model_keys}
        kind = "torchvision ResNet" if backbone_type == "resnet" else "DarkNet-53"
        if not renamed:
            raise ValueError(
                f"'{filename}' holds {kind} ImageNet weights, but none of them fits this model's "
                "backbone; check MODEL.BACKBONE.NAME and MODEL.RESNETS.DEPTH against the weights."
            )
        self.logger.info(
            f"Loading {kind} ImageNet weights from '{filename}': {len(renamed)} tensors into "
            f"{_BOTTOM_UP.rstrip('.')}; dropped {dropped}"
            + (f"; no slot in the model for {unused}" if unused else "")
        )
        if backbone_type == "resnet":
            _warn_if_stride_in_1x1(self.model)
        return {"model": renamed, "__author__": backbone_type, "matching_heuristics": False}

    def _load_model(self, checkpoint):
        _strip_prefix_if_present(checkpoint["model"], "module.")
        # (before the class-dependent layers are looked up under their current names)
        moved = upgrade_legacy_keys(checkpoint["model"])
        if moved:
            self.logger.info(
                f"Checkpoint of an earlier yolact_d2: {len(moved)} tensors of protonet, "
                "semantic_seg_conv and maskiou_net loaded into mask_branch.*"
            )
        reinitialised = _drop_class_dependent_mismatches(
            checkpoint["model"], self.model.state_dict()
        )
        if reinitialised:
            layers = ", ".join(
                f"{n} (checkpoint {old}, model {new})" for n, old, new in reinitialised
            )
            self.logger.info(
                "The checkpoint has a different number of classes; re-initialised the "
                f"class-dependent layers: {layers}"
            )
        return super()._load_model(checkpoint)

    # ------------------------------------------------------------------------------------------
    # Saving
    # ------------------------------------------------------------------------------------------
    def save(self, name: str, **kwargs) -> None:
        """
        Same as fvcore's :meth:`Checkpointer.save`, but the file is written to a temporary file
        in the same directory and renamed into place, and only then tagged in
        ``last_checkpoint`` (itself replaced atomically).
        """
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        bad = non_finite_entries(data)
        if bad:
            raise FloatingPointError(
                f"not saving checkpoint {name!r}: {len(bad)} tensor(s) hold NaN or Inf "
                f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})"
            )
        if urlparse(self.save_dir).scheme:  # not a local directory: no atomic rename
            super().save(name, **kwargs)
            return
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        with atomic_open(save_file) as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if urlparse(self.save_dir).scheme:
            super().tag_last_checkpoint(last_filename_basename)
            return
        with atomic_open(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)


def non_finite_entries(obj, prefix: str = "") -> List[str]:
    """
    The paths (e.g. "model/head.cls_score.weight", "optimizer/state/3/momentum_buffer") of the
    floating-point tensors in a nested checkpoint structure that hold NaN or Inf.
    """
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            return [] if bool(torch.isfinite(obj).all()) else [prefix or "<tensor>"]
        return []
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return []
    found = []
    for key, value in items:
        found += non_finite_entries(value, f"{prefix}/{key}" if prefix else str(key))
    return found


def _is_state_dict(obj) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in obj.values())
    )


def _drop_class_dependent_mismatches(
    checkpoint_state: Dict, model_state: Mapping
) -> List[Tuple[str, tuple, tuple]]:
    """
    Removes from ``checkpoint_state`` (in place) the tensors of the class-dependent layers whose
    shape differs from the model's, so the model keeps their fresh initialisation.

    Returns:
        list[tuple[str, tuple, tuple]]: (layer, checkpoint weight shape, model weight shape) of
        each such layer.
    """
    dropped = []
    for layer in CLASS_DEPENDENT_LAYERS:
        keys = [k for k in model_state if k.startswith(layer + ".") and k in checkpoint_state]
        if all(tuple(checkpoint_state[k].shape) == tuple(model_state[k].shape) for k in keys):
            continue
        weight = f"{layer}.weight"
        old_shape = tuple(checkpoint_state[weight].shape) if weight in checkpoint_state else None
        dropped.append((layer, old_shape, tuple(model_state[weight].shape)))
        for k in keys:
            del checkpoint_state[k]
    return dropped


def _warn_if_stride_in_1x1(model: torch.nn.Module) -> None:
    """torchvision ResNets stride in the 3x3 conv; warn if the model strides in the 1x1."""
    block = dict(model.named_modules()).get(_BOTTOM_UP + "res3.0.conv1")
    if block is not None and tuple(block.stride) != (1, 1) and block.kernel_size == (1, 1):
        logger.warning(
            "Loading torchvision weights into a ResNet with MODEL.RESNETS.STRIDE_IN_1X1=True; "
            "torchvision ResNets need STRIDE_IN_1X1=False."
        )
