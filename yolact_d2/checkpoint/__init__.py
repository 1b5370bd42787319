# Copyright (c) yolact_d2 contributors.
"""Conversion of reference YOLACT / YOLACT++ checkpoints (dbolya/yolact) to yolact_d2."""

from .convert import (
    YolactArchitecture,
    convert_state_dict,
    convert_yolact_checkpoint,
    detect_architecture,
    drop_legacy_keys,
    load_yolact_state_dict,
    reference_config_name,
    save_converted_checkpoint,
    to_reference_state_dict,
)

__all__ = [
    "YolactArchitecture",
    "convert_state_dict",
    "convert_yolact_checkpoint",
    "detect_architecture",
    "drop_legacy_keys",
    "load_yolact_state_dict",
    "reference_config_name",
    "save_converted_checkpoint",
    "to_reference_state_dict",
]
