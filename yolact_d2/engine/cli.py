# Copyright (c) yolact_d2 contributors.
"""What train_net.py and the command-line tools share: the one config loader, and errors."""

import argparse
import contextlib
import functools
import logging
import os
import sys

import torch

__all__ = [
    "ToolInputError",
    "check_output_directory",
    "load_config",
    "tool_parser",
    "fail",
    "tool_config_or_exit",
    "exit_on_input_error",
    "ToolArgumentParser",
    "split_config_opts",
]

logger = logging.getLogger(__name__)


class ToolInputError(ValueError):
    """A config, weights file, input or output location that does not exist or cannot work;
    the tools print it as one ``error:`` line and exit with code 2."""


def check_output_directory(path: str, option: str) -> None:
    """
    Checks, before any work, that the directory an output file ``path`` goes to exists.

    Raises:
        ToolInputError: naming ``option`` (e.g. ``"--output-json"``), the path and the directory.
    """
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ToolInputError(f"{option} {path!r}: directory {parent!r} does not exist")


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


@functools.lru_cache(maxsize=1)
def _default_config():
    from yolact_d2.config import get_yolact_cfg

    return get_yolact_cfg()


def _is_config_key(token: str) -> bool:
    """Whether ``token`` names a config key (``OUTPUT_DIR``, ``MODEL.YOLACT.INPUT_SIZE``)."""
    if not token[:1].isupper():
        return False
    node = _default_config()
    for part in token.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def split_config_opts(argv):
    """
    Splits a tool's command line into its own arguments and the config overrides, the one
    convention of ``train_net.py`` and every tool: overrides follow the tool's arguments, either
    bare (``KEY VALUE ...``, as Detectron2's ``train_net.py``) or after ``--opts`` (as its
    ``demo/demo.py``); a ``--`` may also separate them. Bare overrides start at the first word that
    names a config key, so they may follow an option that takes several values (``--input``).

    Args:
        argv (list[str]): the arguments after the program name.

    Returns:
        tuple[list[str], list[str]]: the tool's own arguments, and the overrides (KEY VALUE ...).
    """
    argv = list(argv)
    for i, token in enumerate(argv):
        if token in ("--opts", "--"):
            return argv[:i], [t for t in argv[i + 1 :] if t != "--"]
        if _is_config_key(token):
            return argv[:i], [t for t in argv[i:] if t not in ("--", "--opts")]
    return argv, []


class ToolArgumentParser(argparse.ArgumentParser):
    """
    An ``ArgumentParser`` whose ``opts`` holds the config overrides however they were given
    (:func:`split_config_opts`): trailing ``KEY VALUE`` pairs, ``--opts KEY VALUE ...``, or both.
    """

    def parse_known_args(self, args=None, namespace=None):
        own, opts = split_config_opts(sys.argv[1:] if args is None else args)
        namespace, rest = super().parse_known_args(own, namespace)
        namespace.opts = list(getattr(namespace, "opts", None) or []) + opts
        return namespace, rest


def add_opts_arguments(parser: argparse.ArgumentParser):
    """Adds the config overrides to ``parser``'s help (:class:`ToolArgumentParser` parses them)."""
    help_text = "config overrides, KEY VALUE ... (also accepted without --opts, after the options)"
    parser.add_argument("--opts", dest="opts_flag", nargs="*", metavar="KEY VALUE", help=help_text)
    if not any(a.dest == "opts" for a in parser._actions):
        parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help=argparse.SUPPRESS)


def tool_parser(doc: str, parents=(), config_file: bool = True) -> ToolArgumentParser:
    """
    A tool's parser: its docstring's first paragraph as the description, the rest (examples)
    as the epilog, the ``--config-file`` every tool takes (unless ``parents`` has it) and the
    config overrides (:func:`split_config_opts`).
    """
    parser = ToolArgumentParser(
        description=doc.split("\n\n")[0].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split("\n\n", 1)[1] if "\n\n" in doc else None,
        parents=list(parents),
        add_help=not parents,
    )
    if config_file:
        parser.add_argument("--config-file", required=True, metavar="FILE", help="a YOLACT config")
    add_opts_arguments(parser)
    return parser


def fail(message: str):
    """A tool's bad-input exit: one ``error:`` line on stderr, exit code 2, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


@contextlib.contextmanager
def exit_on_input_error():
    """
    Ends the tool by :func:`fail` (one ``error:`` line, exit code 2) on a :class:`ToolInputError`
    or a :class:`~yolact_d2.checkpoint.checkpointer.WeightsError` raised in the block: weights
    that are not a checkpoint, a URL that cannot be downloaded, weights of another architecture.
    """
    from yolact_d2.checkpoint.checkpointer import WeightsError

    try:
        yield
    except (ToolInputError, WeightsError) as e:
        fail(str(e))


def tool_config_or_exit(config_file: str, opts=(), cpu_fallback: bool = True):
    """:func:`load_config`, with a :class:`ToolInputError` ending the tool by :func:`fail`."""
    try:
        return load_config(config_file, opts, cpu_fallback=cpu_fallback)
    except ToolInputError as e:
        fail(str(e))
