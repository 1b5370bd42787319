# Copyright (c) yolact_d2 contributors.
from .coco_evaluation import YolactCOCOEvaluator, instances_to_coco_results
