# Copyright (c) yolact_d2 contributors.
from .darknet import DarkNet53
from .fpn import YolactFPN, build_yolact_darknet_fpn_backbone, build_yolact_resnet_fpn_backbone
from .resnet import build_yolact_resnet_backbone, deformable_block_indices
