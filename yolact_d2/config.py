# Copyright (c) yolact_d2 contributors.
"""YOLACT options for Detectron2's yacs config."""

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["add_yolact_config", "get_yolact_cfg"]


def get_yolact_cfg():
    """Detectron2's default config with every YOLACT option added (a new, unfrozen copy)."""
    cfg = get_cfg()
    add_yolact_config(cfg)
    return cfg


def add_yolact_config(cfg):
    """
    Add every YOLACT option to ``cfg`` (in place). Defaults reproduce the reference
    ``yolact_base_config`` (dbolya/yolact) wherever the reference has a value.

    Args:
        cfg (CfgNode): a Detectron2 config, usually from :func:`detectron2.config.get_cfg`.
    """
    _add_model_config(cfg)
    _add_test_config(cfg)
    _add_input_config(cfg)
    _add_solver_config(cfg)


def _add_model_config(cfg):
    """``MODEL.YOLACT``: the network, its priors and its losses."""
    _C = cfg
    _C.MODEL.YOLACT = CN()
    # Number of foreground classes (the softmax has NUM_CLASSES + 1 outputs, background at 0).
    _C.MODEL.YOLACT.NUM_CLASSES = 80
    # Set NUM_CLASSES from the class count of the datasets (yolact_d2.data.setup_datasets);
    # without it a config whose NUM_CLASSES disagrees with its datasets is an error.
    _C.MODEL.YOLACT.NUM_CLASSES_FROM_DATA = False
    # A full YOLACT checkpoint in MODEL.WEIGHTS whose architecture is not this config's (other
    # backbone or depth, priors, prototypes, YOLACT vs YOLACT++) is an error naming both. True
    # loads it anyway, with a warning: only the tensors whose names and shapes match, the rest
    # keeps its initialisation. Never needed for another NUM_CLASSES (the class-dependent layers
    # are re-initialised), ImageNet backbone files, or resuming the same architecture.
    _C.MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH = False
    # The square network input side S: images are resized to S x S ignoring the aspect ratio.
    _C.MODEL.YOLACT.INPUT_SIZE = 550
    # True: keep the aspect ratio instead: the longest side is resized to INPUT_SIZE, the other
    # by the same factor (to a multiple of 4), and padded to a multiple of 8 (see
    # yolact_d2/layers/input_size.py for why); priors keep their size in pixels. Training and
    # inference alike; False is the reference, bit-identical.
    _C.MODEL.YOLACT.PRESERVE_ASPECT_RATIO = False
    # FPN levels fed to the prediction head, in order (priors are concatenated in this order).
    _C.MODEL.YOLACT.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Number of prototype masks k.
    _C.MODEL.YOLACT.NUM_PROTOTYPES = 32
    # SSD box-coding variances (center, size).
    _C.MODEL.YOLACT.BOX_VARIANCES = [0.1, 0.2]

    # ---------------------------------------------------------------------------------------
    # Protonet
    # ---------------------------------------------------------------------------------------
    _C.MODEL.YOLACT.PROTONET = CN()
    # Name in YOLACT_PROTONET_REGISTRY.
    _C.MODEL.YOLACT.PROTONET.NAME = "ProtoNet"
    # FPN level the protonet reads.
    _C.MODEL.YOLACT.PROTONET.IN_FEATURE = "p3"
    # Channels of the 3x3 convs (3 before the x2 upsample, 1 after it).
    _C.MODEL.YOLACT.PROTONET.CONV_DIM = 256
    _C.MODEL.YOLACT.PROTONET.NUM_CONVS_BEFORE_UPSAMPLE = 3

    # ---------------------------------------------------------------------------------------
    # Prediction head
    # ---------------------------------------------------------------------------------------
    _C.MODEL.YOLACT.HEAD = CN()
    # Name in YOLACT_HEAD_REGISTRY.
    _C.MODEL.YOLACT.HEAD.NAME = "YolactHead"
    # Channels of the shared 3x3 "upfeature" conv.
    _C.MODEL.YOLACT.HEAD.CONV_DIM = 256

    # ---------------------------------------------------------------------------------------
    # Priors (anchors). Sizes are in pixels of the S x S input, one list per level.
    # ---------------------------------------------------------------------------------------
    _C.MODEL.YOLACT.PRIORS = CN()
    _C.MODEL.YOLACT.PRIORS.SCALES = [[24.0], [48.0], [96.0], [192.0], [384.0]]
    # Aspect ratios as width / height (the reference's convention; Detectron2 uses h / w).
    _C.MODEL.YOLACT.PRIORS.ASPECT_RATIOS = [1.0, 0.5, 2.0]
    # The released YOLACT v1 checkpoints use square priors of side scale * sqrt(ratio).
    _C.MODEL.YOLACT.PRIORS.SQUARE = True

    # ---------------------------------------------------------------------------------------
    # Training losses (reference constants)
    # ---------------------------------------------------------------------------------------
    _C.MODEL.YOLACT.LOSS = CN()
    # Prior/GT IoU thresholds: >= POS is positive, < NEG is background, between is ignored.
    _C.MODEL.YOLACT.LOSS.POS_IOU_THRESHOLD = 0.5
    _C.MODEL.YOLACT.LOSS.NEG_IOU_THRESHOLD = 0.4
    # A non-positive prior covered by a crowd box for more than this fraction is ignored.
    _C.MODEL.YOLACT.LOSS.CROWD_IOU_THRESHOLD = 0.7
    # Online hard negative mining ratio (negatives : positives).
    _C.MODEL.YOLACT.LOSS.NEG_POS_RATIO = 3
    _C.MODEL.YOLACT.LOSS.CLASS_WEIGHT = 1.0
    _C.MODEL.YOLACT.LOSS.BOX_WEIGHT = 1.5
    _C.MODEL.YOLACT.LOSS.MASK_WEIGHT = 6.125
    # Semantic segmentation loss on P3 (training only). 0 disables it and drops its conv.
    _C.MODEL.YOLACT.LOSS.SEMANTIC_SEG_WEIGHT = 1.0
    # At most this many positive priors per image train the mask branch (300 for im700).
    _C.MODEL.YOLACT.LOSS.MASKS_TO_TRAIN = 100
    # YOLACT++ mask-IoU loss weight, and the smallest GT mask (proto pixels) it trains on.
    _C.MODEL.YOLACT.LOSS.MASKIOU_WEIGHT = 25.0
    _C.MODEL.YOLACT.LOSS.DISCARD_MASK_AREA = 25

    # ---------------------------------------------------------------------------------------
    # YOLACT++ fast mask re-scoring
    # ---------------------------------------------------------------------------------------
    _C.MODEL.YOLACT.MASKIOU = CN()
    _C.MODEL.YOLACT.MASKIOU.ENABLED = False
    # Multiply the mask score (and optionally the box score) by the predicted mask IoU.
    _C.MODEL.YOLACT.MASKIOU.RESCORE_MASK = True
    _C.MODEL.YOLACT.MASKIOU.RESCORE_BOX = False

    # ---------------------------------------------------------------------------------------
    # Backbone options (the ResNet itself is configured by MODEL.RESNETS)
    # ---------------------------------------------------------------------------------------
    _C.MODEL.YOLACT.BACKBONE = CN()
    # YOLACT++ deformable convs: for each of res2..res5, how many trailing blocks may use a
    # deformable 3x3 (the reference's ``dcn_layers``) and the block interval between them.
    _C.MODEL.YOLACT.BACKBONE.DEFORM_LAYERS = [0, 0, 0, 0]
    _C.MODEL.YOLACT.BACKBONE.DEFORM_INTERVAL = 1
    # DarkNet-53 depth per stage (used by build_yolact_darknet_fpn_backbone).
    _C.MODEL.YOLACT.BACKBONE.DARKNET_BLOCKS = [1, 2, 8, 8, 4]


def _add_test_config(cfg):
    """``MODEL.YOLACT.TEST`` and the inference speed options: what the model returns, how fast."""
    _C = cfg
    _C.MODEL.YOLACT.TEST = CN()
    # "fast" (Fast NMS, per class), "cross_class" (class-agnostic Fast NMS), "traditional"
    # (the reference's greedy NMS) or "batched" (torchvision's batched_nms on the same candidates).
    _C.MODEL.YOLACT.TEST.NMS_TYPE = "fast"
    # Priors whose best foreground class score is not above this are dropped before NMS.
    _C.MODEL.YOLACT.TEST.SCORE_THRESH = 0.05
    # Candidates per class entering NMS.
    _C.MODEL.YOLACT.TEST.TOP_K = 200
    _C.MODEL.YOLACT.TEST.NMS_THRESH = 0.5
    # Detections kept per image (not applied by the cross-class variant, as in the reference).
    _C.MODEL.YOLACT.TEST.DETECTIONS_PER_IMAGE = 100
    # Threshold on the up-sampled soft masks.
    _C.MODEL.YOLACT.TEST.MASK_THRESH = 0.5
    # Crop assembled masks by their predicted box (in prototype space, 1 px padding).
    _C.MODEL.YOLACT.TEST.CROP_MASKS = True
    # Score below which demos and visualisations hide a detection. It never changes what the
    # model returns (evaluation keeps the reference's outputs).
    _C.MODEL.YOLACT.TEST.DISPLAY_SCORE_THRESH = 0.3
    # pred_masks is a (D, H, W) bool tensor, as Detectron2's; where that tensor would be larger
    # than this many bytes (e.g. 100 masks of an 8000 x 8000 image: 6 GiB), it is a
    # yolact_d2.modeling.BoxLocalMasks instead (the same masks, bit-packed around each mask;
    # masks[i] and iteration give (H, W) tensors, .tensor all of them). CPU only.
    _C.MODEL.YOLACT.TEST.MAX_DENSE_MASK_BYTES = 2**30
    # Also return each detection's k mask coefficients as Instances.pred_coefficients (D, k)
    # float32, e.g. as an appearance cue for tracking (yolact_d2.engine.tracking). Nothing else
    # in the output changes.
    _C.MODEL.YOLACT.TEST.OUTPUT_COEFFICIENTS = False

    # ---------------------------------------------------------------------------------------
    # Speed options
    # ---------------------------------------------------------------------------------------
    # The fast CPU inference path: BatchNorm folded into the convs (on a private copy of the
    # network), channels_last activations and autocast to FAST_CPU_DTYPE.
    _C.MODEL.YOLACT.FAST_CPU_INFERENCE = False
    # Autocast dtype of the fast CPU path: "bfloat16", "float32" (BatchNorm folding and
    # channels_last only) or "auto" (bfloat16 where the CPU has bf16 instructions, AMX or
    # avx512_bf16; float32 where bf16 would be emulated and slower than fp32).
    _C.MODEL.YOLACT.FAST_CPU_DTYPE = "auto"
    # torch.compile (inductor, weights frozen) of the fast CPU path's network: faster after a
    # one-off compilation per batch size (~15 s for R50 on 2 cores; needs a C++ compiler, falls
    # back to eager with a warning without one).
    _C.MODEL.YOLACT.FAST_CPU_COMPILE = False
    # Images per network call at inference on CPU (0: the whole batch at once). On CPUs the
    # network already runs near the FMA peak at batch 1, and larger calls are slower per image
    # (caches; with NCHW, oneDNN's layout reorders): batches are run in chunks of this size.
    _C.MODEL.YOLACT.CPU_INFERENCE_CHUNK = 1


def _add_input_config(cfg):
    """``INPUT.YOLACT`` (augmentation), ``DATASETS.REGISTER_COCO`` and ``REGISTER_YOLO``."""
    _C = cfg
    # Which YOLACT augmentations the training mapper applies (photometric, expand,
    # random sample crop, mirror); the final square resize is always applied.
    _C.INPUT.YOLACT = CN()
    _C.INPUT.YOLACT.PHOTOMETRIC = True
    _C.INPUT.YOLACT.EXPAND = True
    # Largest expand ratio (canvas side / image side).
    _C.INPUT.YOLACT.EXPAND_MAX_RATIO = 4.0
    _C.INPUT.YOLACT.RANDOM_SAMPLE_CROP = True
    _C.INPUT.YOLACT.MIRROR = True

    # ---------------------------------------------------------------------------------------
    # Datasets named by the config (yolact_d2.data.setup_datasets; see datasets/README.md)
    # ---------------------------------------------------------------------------------------
    # [name, json_file, image_root] triples of COCO instance-format datasets to register.
    _C.DATASETS.REGISTER_COCO = []
    # [name, data_yaml, split] triples of Ultralytics YOLO-seg datasets to register (data.yaml
    # with path, names and the splits; labels/*.txt polygons). See yolact_d2.data.yolo_seg.
    _C.DATASETS.REGISTER_YOLO = []
    # Bad training data (unreadable images, images without a usable annotation, zero-area or
    # non-finite boxes, polygons of fewer than 3 points or with NaN/Inf, masks outside the
    # image): "skip" drops it, counts it by reason and logs the counts (the reference skips such
    # data too; a dataset whose every image is bad is an error after 1000 skips in a row);
    # "error" validates every annotation and image file before training starts and raises at
    # the first problem, naming the file and annotation. Category ids outside the classes are
    # an error either way. YOLO-seg datasets (DATASETS.REGISTER_YOLO) apply it when a split is
    # read, to label lines that are not a polygon in [0, 1] and to images that cannot be opened.
    _C.DATALOADER.YOLACT_BAD_DATA = "skip"


def _add_solver_config(cfg):
    """Training: ``SOLVER`` additions and the reference's training rules."""
    _C = cfg
    # Training under bf16 autocast on CPU (SOLVER.AMP.ENABLED covers CUDA).
    _C.SOLVER.BF16_CPU = False
    # Training with the weights in channels_last (NHWC) memory format, so that convolutions and
    # their gradients run on NHWC activations: faster with oneDNN on CPU (the main job: 9%).
    # The maths is the same, the summation order of the convolutions is not (results differ in
    # the last bits), so it is off by default, where training matches the reference exactly.
    _C.SOLVER.CHANNELS_LAST = False
    # The reference's --autoscale: if SOLVER.IMS_PER_BATCH = b != 8, BASE_LR *= b / 8 and
    # MAX_ITER, STEPS //= b / 8 (warm-up unchanged). Alternative to REFERENCE_WORLD_SIZE.
    _C.SOLVER.YOLACT_AUTOSCALE = False
    # "SGD" (the reference; SOLVER.MOMENTUM, SOLVER.NESTEROV) or "ADAMW" (SOLVER.ADAM_BETAS;
    # decoupled weight decay), which trains small models from random weights faster.
    _C.SOLVER.OPTIMIZER = "SGD"
    _C.SOLVER.ADAM_BETAS = (0.9, 0.999)
    # SOLVER.CLIP_GRADIENTS.CLIP_TYPE also accepts "full_model": the L2 norm of all gradients
    # together is clipped to CLIP_VALUE (and logged as grad_norm); it needs no key of its own.

    # Training metrics (console, metrics.json, TensorBoard) are written every LOG_PERIOD
    # iterations, each value the median over the iterations since the last write (Detectron2's
    # default writers and period are 20). 1 logs every iteration as it is.
    _C.SOLVER.LOG_PERIOD = 20
    # A step whose total loss is not finite is skipped (the reference's behaviour: no optimizer
    # step, BatchNorm statistics restored). After this many consecutive skipped steps training
    # stops with an error naming the non-finite loss terms and the iteration; 0: never stops.
    _C.SOLVER.MAX_NONFINITE_STEPS = 20
    # The reference's BatchNorm rule: BatchNorm is frozen (running statistics used and kept,
    # affine parameters not trained) when one BatchNorm layer normalises fewer than this many
    # images per iteration: SOLVER.IMS_PER_BATCH / processes for plain BN, all of
    # SOLVER.IMS_PER_BATCH for synchronised BN (MODEL.RESNETS.NORM "naiveSyncBN", "SyncBN").
    # The reference freezes below 6 images per GPU. 0 never freezes (training from scratch).
    _C.MODEL.YOLACT.FREEZE_BN_BELOW_BATCH = 6
    # Whether this config's recipe is written for an ImageNet-pretrained backbone (every COCO
    # config, as the reference); training such a config from random weights (MODEL.WEIGHTS "")
    # logs a warning that points to the *_scratch.yaml recipes, which set this to False.
    _C.MODEL.YOLACT.PRETRAINED_RECIPE = True
    # DistributedDataParallel(find_unused_parameters=...). Every loss reaches every trainable
    # parameter (the mask-IoU loss keeps a zero-weighted path when no mask qualifies), so this
    # is off; turn it on for custom heads whose parameters may go unused in an iteration.
    _C.SOLVER.YOLACT_DDP_FIND_UNUSED_PARAMETERS = False
