# Copyright (c) yolact_d2 contributors.
from .backbone import (
    DarkNet53,
    YolactFPN,
    build_yolact_darknet_fpn_backbone,
    build_yolact_resnet_fpn_backbone,
)
from .box_coder import decode_boxes, encode_boxes
from .head import YOLACT_HEAD_REGISTRY, YolactHead, build_yolact_head
from .losses import YolactLoss
from .mask_assembly import assemble_masks, crop_masks
from .mask_branch import YolactMaskBranch
from .maskiou import MaskIoUNet
from .matching import match_priors
from .meta_arch import POSTPROCESS_STAGES, Yolact
from .paste import BoxLocalMasks, detections_in_pixels, paste_instances, upsample_masks
from .postprocessing import PostprocessSettings
from .priors import YolactPriorGenerator, generate_level_priors
from .protonet import YOLACT_PROTONET_REGISTRY, ProtoNet, build_protonet
