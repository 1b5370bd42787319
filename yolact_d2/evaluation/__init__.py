# Copyright (c) yolact_d2 contributors.
from .coco_evaluation import YolactCOCOEvaluator
