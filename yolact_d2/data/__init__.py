# Copyright (c) yolact_d2 contributors.
"""
Data: YOLACT's augmentation, its dataset mapper and dataset registration.

Importing this package registers ``tiny_coco_{train,val}``, ``yolact_synthetic_{train,val}``
and any missing ``coco_2017_{train,val}`` (lazily: nothing is read or generated at import);
:func:`setup_datasets` registers the datasets a config names in ``DATASETS.REGISTER_COCO`` and
``DATASETS.REGISTER_YOLO`` (Ultralytics YOLO-seg, :mod:`.yolo_seg`).
"""

from . import datasets, synthetic  # registration
from .augmentation import (
    BilinearResizeTransform,
    Expand,
    ExpandTransform,
    PhotometricDistort,
    PhotometricDistortTransform,
    RandomSampleCrop,
    SquareResize,
    YolactAugInput,
    annotations_kept_by_crops,
    build_yolact_augmentation,
    centres_inside,
)
from .dataset_mapper import BadDataCounter, YolactDatasetMapper, validate_training_data
from .datasets import (
    read_coco_categories,
    register_coco_datasets_from_config,
    register_dataset_subset,
    register_tiny_coco,
    resolve_num_classes,
    setup_datasets,
    tiny_coco_root,
)
from .synthetic import (
    SYNTHETIC_CLASSES,
    SyntheticSpec,
    ensure_synthetic_split,
    register_all_synthetic,
    register_synthetic_split,
    render_synthetic_image,
    synthetic_root,
    write_synthetic_split,
)
from .yolo_seg import (
    load_yolo_seg_split,
    read_yolo_data_yaml,
    read_yolo_seg_split,
    register_yolo_datasets_from_config,
    register_yolo_seg,
    yolo_label_path,
)
