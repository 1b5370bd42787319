# Copyright (c) yolact_d2 contributors.
from .coco_evaluation import YolactCOCOEvaluator, instances_to_coco_results
from .mask_agreement import MaskAgreement, mask_ious, match_detections
