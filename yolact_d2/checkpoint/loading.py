# Copyright (c) yolact_d2 contributors.
"""
Reading a reference YOLACT / YOLACT++ checkpoint (dbolya/yolact) safely: ``weights_only``, the
zip records' checksums, a mapping of names to tensors of the reference's dtypes; and the legacy
keys the reference's own loader ignores.
"""

import logging
import os
import re
import zipfile
from typing import Dict, Mapping, Sequence

import torch

__all__ = ["load_yolact_state_dict", "drop_legacy_keys", "is_legacy_key", "quote", "first_line"]

logger = logging.getLogger(__name__)

# Number of errors of each kind quoted in an error message.
MAX_QUOTED = 5


def quote(items: Sequence[str]) -> str:
    """The first :data:`MAX_QUOTED` items, and how many more there are."""
    text = ", ".join(items[:MAX_QUOTED])
    more = len(items) - MAX_QUOTED
    return text + (f", ... ({more} more)" if more > 0 else "")


def first_line(error: BaseException, limit: int = 200) -> str:
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
        quoted = ", ".join(f"{k!r} ({type(obj[k]).__name__})" for k in bad[:MAX_QUOTED])
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
            f"Cannot read {path} as a PyTorch checkpoint ({first_line(e)}). The file may be "
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
        examples = "; ".join(bad[:MAX_QUOTED])
        raise ValueError(
            f"{path} does not hold the reference's tensor types (float32 weights, int64 "
            f"BatchNorm counters): {len(bad)} tensor(s) differ, e.g. {examples}."
        )


def is_legacy_key(key: str) -> bool:
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
    dropped = [k for k in state_dict if is_legacy_key(k)]
    if dropped:
        logger.info(
            f"Dropped {len(dropped)} legacy key(s) that the reference loader also ignores: "
            + quote(dropped)
        )
    return {k: v for k, v in state_dict.items() if not is_legacy_key(k)}
