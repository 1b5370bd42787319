# Copyright (c) yolact_d2 contributors.
"""What train_net.py and the command-line tools share: the one config loader, and errors."""

import argparse
import logging
import os
import sys

import torch

__all__ = ["ToolInputError", "load_config", "tool_parser", "fail", "tool_config_or_exit"]

logger = logging.getLogger(__name__)


class ToolInputError(ValueError):
    """A config, weights file, input or output location that does not exist or cannot work;
    the tools print it as one ``error:`` line and exit with code 2."""


def load_config(config_file: str, opts=(), *, cpu_fallback: bool = True, setup: bool = True):
    """
    The one config loader (``train_net.py``, every tool, the benchmark and the tests): Detectron2's
    defaults with the YOLACT keys, ``config_file``, then ``opts`` (KEY VALUE ...); with
    ``cpu_fallback`` a CUDA device on a machine without CUDA becomes "cpu" with a warning; with
    ``setup`` the datasets the config names in ``DATASETS.REGISTER_COCO`` are registered and
    ``MODEL.YOLACT.NUM_CLASSES`` checked or set (:func:`~yolact_d2.data.setup_datasets`).

    Raises:
        ToolInputError: the config file does not exist, or a local ``MODEL.WEIGHTS`` file does
            not exist.

    Returns:
        CfgNode: not frozen.
    """
    from yolact_d2.config import get_yolact_cfg
    from yolact_d2.data import setup_datasets

    if not os.path.isfile(config_file):
        raise ToolInputError(f"config file {config_file!r} does not exist")
    cfg = get_yolact_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    weights = cfg.MODEL.WEIGHTS
    if weights and "://" not in weights and not os.path.isfile(weights):
        raise ToolInputError(f"MODEL.WEIGHTS {weights!r} does not exist")
    if cpu_fallback and cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"MODEL.DEVICE {cfg.MODEL.DEVICE!r}: CUDA is not available, running on CPU.")
        cfg.MODEL.DEVICE = "cpu"
    return setup_datasets(cfg) if setup else cfg


def tool_parser(doc: str) -> argparse.ArgumentParser:
    """
    A tool's parser: its docstring's first paragraph as the description, the rest (examples)
    as the epilog, and the ``--config-file`` every tool takes.
    """
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split("\n\n", 1)[1] if "\n\n" in doc else None,
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="a YOLACT config")
    return parser


def fail(message: str):
    """A tool's bad-input exit: one ``error:`` line on stderr, exit code 2, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def tool_config_or_exit(config_file: str, opts=(), cpu_fallback: bool = True):
    """:func:`load_config`, with a :class:`ToolInputError` ending the tool by :func:`fail`."""
    try:
        return load_config(config_file, opts, cpu_fallback=cpu_fallback)
    except ToolInputError as e:
        fail(str(e))
