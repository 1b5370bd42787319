# Copyright (c) yolact_d2 contributors.
"""YOLACT and YOLACT++ for Detectron2. Importing this package registers everything."""

from . import data  # noqa: F401  (registers tiny_coco_* and yolact_synthetic_* datasets)
from . import layers  # noqa: F401  (registers torch.ops.yolact_d2.*)
from . import modeling  # noqa: F401  (registers the meta-architecture and backbones)
from .config import add_yolact_config, get_yolact_cfg

__version__ = "0.1.0"
