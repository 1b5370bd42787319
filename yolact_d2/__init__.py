# Copyright (c) yolact_d2 contributors.
"""YOLACT and YOLACT++ for Detectron2. Importing this package registers everything."""

from ._quiet import import_third_party_quietly

import_third_party_quietly()  # before anything imports Detectron2: see yolact_d2/_quiet.py

from . import data  # noqa: F401,E402  (registers tiny_coco_* and yolact_synthetic_* datasets)
from . import layers  # noqa: F401,E402  (registers torch.ops.yolact_d2.*)
from . import modeling  # noqa: F401,E402  (registers the meta-architecture and backbones)
from .config import add_yolact_config, get_yolact_cfg  # noqa: E402

__version__ = "0.1.0"
