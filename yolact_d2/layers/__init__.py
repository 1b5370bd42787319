# Copyright (c) yolact_d2 contributors.
from .box_ops import box_iou, center_size_to_corners, intersection_over_first
from .deform_conv import ModulatedDeformConv2d
from .nms import (
    NMS_FUNCTIONS,
    batched_nms,
    build_nms,
    cross_class_fast_nms,
    fast_nms,
    fast_nms_traceable,
    max_iou_with_higher_scored,
    sorted_top_k,
    stable_top_k_traceable,
    traditional_nms,
)
