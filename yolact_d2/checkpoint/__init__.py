# Copyright (c) yolact_d2 contributors.
"""Conversion of reference YOLACT / YOLACT++ checkpoints (dbolya/yolact) to yolact_d2."""

from .architecture import YolactArchitecture, detect_architecture, reference_config_name
from .convert import convert_state_dict, convert_yolact_checkpoint, save_converted_checkpoint
from .key_names import reference_key, to_reference_state_dict, yolact_d2_key
from .loading import drop_legacy_keys, load_yolact_state_dict

__all__ = [
    "YolactArchitecture",
    "convert_state_dict",
    "convert_yolact_checkpoint",
    "detect_architecture",
    "drop_legacy_keys",
    "load_yolact_state_dict",
    "reference_config_name",
    "reference_key",
    "save_converted_checkpoint",
    "to_reference_state_dict",
    "yolact_d2_key",
]
