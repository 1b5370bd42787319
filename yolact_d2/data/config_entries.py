# Copyright (c) yolact_d2 contributors.
"""The entries of ``DATASETS.REGISTER_COCO`` and ``DATASETS.REGISTER_YOLO``: three strings each."""

from typing import Sequence, Tuple

__all__ = ["parse_three_strings"]


def parse_three_strings(entry, key: str, fields: Sequence[str], example: str) -> Tuple[str, ...]:
    """
    Checks one registration entry of the config list ``key``.

    Args:
        entry: the entry as the config holds it (a list or tuple).
        key: the config key, e.g. ``"DATASETS.REGISTER_COCO"``, named in the error.
        fields: the names of the three strings, e.g. ``("name", "json_file", "image_root")``.
        example: the key's value as one would write it on the command line, shown in the error.

    Returns:
        tuple[str, str, str]: the entry's strings, unchanged.

    Raises:
        ValueError: the entry is not three non-empty strings.
    """
    if not (
        isinstance(entry, (list, tuple))
        and len(entry) == 3
        and all(isinstance(v, str) and v for v in entry)
    ):
        raise ValueError(
            f"{key} entries are [{', '.join(fields)}] (three strings), got {entry!r}. "
            f"On the command line: {key} {example}"
        )
    return tuple(entry)
