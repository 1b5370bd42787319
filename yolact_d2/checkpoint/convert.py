# Copyright (c) yolact_d2 contributors.
"""
Conversion of the reference YOLACT / YOLACT++ checkpoints (dbolya/yolact) to yolact_d2: read
(:mod:`.loading`), recognise (:mod:`.architecture`), rename (:mod:`.key_names`), then write a
Detectron2-style checkpoint atomically, which :class:`detectron2.checkpoint.DetectionCheckpointer`
loads as is.
"""

import logging
import os
from collections import OrderedDict
from typing import Mapping, Optional

import torch

from yolact_d2.utils.file_io import atomic_open

from .architecture import YolactArchitecture, detect_architecture
from .key_names import yolact_d2_key
from .loading import drop_legacy_keys, first_line, load_yolact_state_dict

__all__ = ["convert_state_dict", "save_converted_checkpoint", "convert_yolact_checkpoint"]

logger = logging.getLogger(__name__)


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
    converted = OrderedDict()
    for key, value in state_dict.items():
        new = yolact_d2_key(key, architecture.backbone_type)
        if new is None:
            raise ValueError(f"No yolact_d2 name for the reference key {key!r}.")
        converted[new] = value
    if len(converted) != len(state_dict):
        raise ValueError("Two reference keys map to the same yolact_d2 key.")
    if any(k.startswith("mask_branch.semantic_seg_conv.") for k in converted):
        logger.info(
            "Kept the training-only semantic_seg_conv weights (for fine-tuning; inference never "
            "runs them). With MODEL.YOLACT.LOSS.SEMANTIC_SEG_WEIGHT 0 the model has no such "
            "layer: YolactCheckpointer skips them (logged at INFO), Detectron2's "
            "DetectionCheckpointer (DefaultPredictor) warns that they are not used by the model; "
            "every other weight loads the same."
        )
    return converted


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
            raise OSError(f"Cannot write {path}: {first_line(e)}") from e


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
