# Copyright (c) yolact_d2 contributors.
from .backbone import (
    DarkNet53,
    YolactFPN,
    build_yolact_darknet_fpn_backbone,
    build_yolact_resnet_fpn_backbone,
)
from .box_coder import decode_boxes, encode_boxes
from .box_local_masks import BoxLocalMasks
from .head import YOLACT_HEAD_REGISTRY, YolactHead, build_yolact_head
from .losses import YolactLoss
from .mask_assembly import assemble_masks, crop_masks, upsample_masks
from .mask_branch import YolactMaskBranch
from .maskiou import MaskIoUNet
from .matching import match_priors
from .meta_arch import Yolact
from .postprocessing import detect, detections_to_instances
from .priors import YolactPriorGenerator, generate_level_priors
from .protonet import YOLACT_PROTONET_REGISTRY, ProtoNet, build_protonet
