# Copyright (c) yolact_d2 contributors.
from .box_ops import box_iou, center_size_to_corners, intersection_over_first
from .deform_conv import ModulatedDeformConv2d
from .nms import NMS_FUNCTIONS, cross_class_fast_nms, fast_nms, traditional_nms
