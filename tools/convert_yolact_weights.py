#!/usr/bin/env python
# Copyright (c) yolact_d2 contributors.
"""
Convert a checkpoint of the reference YOLACT / YOLACT++ (dbolya/yolact) to yolact_d2.

Example:
    python tools/convert_yolact_weights.py yolact_im700_54_800000.pth yolact_im700_d2.pth

It prints the detected architecture and the config to use with the output, e.g.
``--config-file configs/yolact_R_101_FPN_700.yaml MODEL.WEIGHTS yolact_im700_d2.pth``.
"""

import yolact_d2  # noqa: F401  isort:skip  (first: Detectron2 without its import-time warnings)
import argparse
import logging
import sys

from yolact_d2.checkpoint import convert_yolact_checkpoint


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert a reference YOLACT / YOLACT++ checkpoint to a yolact_d2 checkpoint."
    )
    parser.add_argument("src", help="reference checkpoint, e.g. yolact_base_54_800000.pth")
    parser.add_argument("dst", help="output checkpoint (.pth), loadable with MODEL.WEIGHTS")
    return parser


def _report(architecture, dst: str) -> None:
    print(f"Architecture: {architecture.description}")
    print(
        f"  {architecture.backbone}, {architecture.num_classes} classes, "
        f"{architecture.num_prototypes} prototypes"
    )
    print(f"Config: {architecture.config_file}")
    overrides = []
    if architecture.num_classes != 80:
        overrides.append(f"MODEL.YOLACT.NUM_CLASSES {architecture.num_classes}")
    if architecture.num_prototypes != 32:
        overrides.append(f"MODEL.YOLACT.NUM_PROTOTYPES {architecture.num_prototypes}")
    if overrides:
        print(f"  with the overrides: {' '.join(overrides)}")
    print(f"Wrote {dst}")


def main(argv=None) -> int:
    """
    Run the conversion.

    Returns:
        int: 0 on success, 1 when the input is rejected or the output cannot be written (the
        reason is printed to stderr, without a traceback; the output file is left untouched).
    """
    args = get_parser().parse_args(argv)
    try:
        architecture = convert_yolact_checkpoint(args.src, args.dst)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    _report(architecture, args.dst)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="[convert] %(message)s")
    sys.exit(main())
