# Copyright (c) yolact_d2 contributors.
"""
The dataset mapper for YOLACT: reads an image and its annotations (Detectron2 dataset dict) and
returns what the model consumes, with the reference's training augmentation.
"""

import copy
import logging
import numpy as np
import os
from collections import Counter
from dataclasses import dataclass
from typing import List, Optional

import pycocotools.mask as mask_util
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances, polygons_to_bitmask

from .augmentation import (
    YolactAugInput,
    annotations_kept_by_crops,
    build_yolact_augmentation,
    final_resize,
)

__all__ = ["BAD_DATA_POLICIES", "BadDataCounter", "YolactDatasetMapper", "validate_training_data"]

logger = logging.getLogger(__name__)


class BadDataCounter:
    """
    Counts skipped images and annotations by reason and logs a warning the first time each
    reason occurs and then every ``log_period`` skips, with the counts so far. Each dataloader
    worker has its own mapper and therefore its own counts.
    """

    def __init__(self, log_period: int = 100, policy: str = "skip"):
        """
        Args:
            log_period: log every this many skips (over all reasons).
            policy: "skip" (count and go on) or "error" (raise at the first problem), see
                ``DATALOADER.YOLACT_BAD_DATA``.
        """
        if policy not in BAD_DATA_POLICIES:
            raise ValueError(
                f"DATALOADER.YOLACT_BAD_DATA must be one of {BAD_DATA_POLICIES}, got {policy!r}"
            )
        self.log_period = log_period
        self.policy = policy
        self.counts = Counter()

    def add(self, reason: str, detail: str, *, always_log: bool = False):
        """
        Args:
            reason: the kind of problem (the counter key).
            detail: where it happened, e.g. the file name and annotation id.
            always_log: log this occurrence even if the schedule would not.

        Raises:
            ValueError: with the "error" policy.
        """
        if self.policy == "error":
            raise ValueError(
                f"{detail}: {reason.rsplit(' (', 1)[0]} (DATALOADER.YOLACT_BAD_DATA is "
                "'error'; 'skip' drops and counts such data instead)"
            )
        self.counts[reason] += 1
        total = sum(self.counts.values())
        if always_log or self.counts[reason] == 1 or total % self.log_period == 0:
            logger.warning(
                f"[YolactDatasetMapper] {reason}: {detail}. Skipped so far: {dict(self.counts)}"
            )


# DATALOADER.YOLACT_BAD_DATA values: drop and count bad data, or raise at the first.
BAD_DATA_POLICIES = ("skip", "error")

# Reasons for skipping, the keys of BadDataCounter.counts.
UNREADABLE_IMAGE = "unreadable image (skipped)"
NO_ANNOTATIONS = "image without annotations (skipped)"
CROWD_ONLY = "image with only crowd annotations (skipped)"
NO_VALID_INSTANCE = "image without a valid non-crowd annotation (skipped)"
BAD_BOX = "annotation with a zero-area or non-finite box (dropped)"
NO_SEGMENTATION = "non-crowd annotation without segmentation (dropped)"
EMPTY_POLYGON = "annotation whose polygons all have < 3 points or non-finite ones (dropped)"
BAD_RLE = "annotation whose RLE size differs from the image (dropped)"
EMPTY_MASK = "annotation whose mask is empty, e.g. a polygon outside the image (dropped)"
AUGMENTATION_FALLBACK = "augmentation kept no instance; un-augmented image used"
NOTHING_AFTER_RESIZE = "no instance survives the resize (skipped)"


@dataclass
class _Targets:
    """
    The valid annotations of one image, in its original pixel coordinates.

    Attributes:
        boxes (ndarray): (N, 4) float XYXY boxes of the non-crowd instances.
        classes (ndarray): (N,) int64 contiguous class ids.
        masks (list[ndarray]): N (H, W) uint8 binary masks.
        crowd_boxes (ndarray): (M, 4) float XYXY boxes of the crowd annotations.
    """

    boxes: np.ndarray
    classes: np.ndarray
    masks: List[np.ndarray]
    crowd_boxes: np.ndarray

    @property
    def all_boxes(self):
        """
        ndarray: (N + M, 4) the instance boxes followed by the crowd boxes.
        """
        return np.concatenate([self.boxes, self.crowd_boxes])

    def aug_input(self, image):
        """
        Returns:
            YolactAugInput: ``image`` with :attr:`all_boxes` and their crowd flags.
        """
        is_crowd = np.arange(len(self.all_boxes)) >= len(self.boxes)
        return YolactAugInput(image, boxes=self.all_boxes, is_crowd=is_crowd)


def _annotation_box(anno):
    """
    Returns:
        ndarray or None: (4,) XYXY box in absolute pixels, or None if it has no positive area
        or is not finite. ``bbox_mode`` defaults to COCO's XYWH_ABS.
    """
    if len(anno.get("bbox", ())) != 4:
        return None
    mode = anno.get("bbox_mode", BoxMode.XYWH_ABS)
    box = np.asarray(BoxMode.convert(list(anno["bbox"]), mode, BoxMode.XYXY_ABS), np.float64)
    if not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
        return None
    return box


def _segmentation_to_mask(segm, height, width):
    """
    Rasterise one annotation's segmentation.

    Args:
        segm: polygons (list[list[float]]), an RLE dict (compressed or not) or an (H, W) array.
        height, width (int): the image size.

    Returns:
        tuple[ndarray or None, str or None]: the (H, W) uint8 mask, or None and the reason.
    """
    if isinstance(segm, dict):
        if list(segm.get("size", ())) != [height, width]:
            return None, BAD_RLE
        if isinstance(segm["counts"], list):
            segm = mask_util.frPyObjects(segm, height, width)
        mask = mask_util.decode(segm)
    elif isinstance(segm, np.ndarray):
        if segm.shape != (height, width):
            return None, BAD_RLE
        mask = segm
    else:
        polygons = [np.asarray(p, np.float64) for p in segm or ()]
        polygons = [
            p
            for p in polygons
            if p.ndim == 1 and len(p) >= 6 and len(p) % 2 == 0 and np.isfinite(p).all()
        ]
        if not polygons:
            return None, EMPTY_POLYGON
        mask = polygons_to_bitmask(polygons, height, width)
    mask = (mask > 0).astype(np.uint8)
    if not mask.any():
        return None, EMPTY_MASK
    return mask, None


class YolactDatasetMapper:
    """
    Maps a Detectron2 dataset dict to YOLACT's input.

    Training output (the dict is a copy of the input plus these keys; "annotations" removed):

    * ``image``: uint8 Tensor (C, S, S) in ``image_format`` channel order;
    * ``instances``: :class:`Instances` of size (S, S) with ``gt_boxes`` (:class:`Boxes`,
      absolute XYXY, the tight boxes of the masks), ``gt_classes`` (int64 contiguous ids) and
      ``gt_masks`` (:class:`BitMasks`, (N, S, S)); N >= 1;
    * ``crowd_boxes``: float32 Tensor (M, 4), absolute XYXY boxes of the crowd annotations that
      survived the augmentation, clipped to the image (M may be 0).

    S is the size the augmentations produce (``MODEL.YOLACT.INPUT_SIZE``). Crowd annotations are
    kept apart from the instances, go through the same transforms and the same crop rule.
    If the augmentation leaves no instance (a mask vanishes or falls out of the crop), new random
    parameters are drawn up to ``max_resample_tries`` times, then ``fallback_augmentations`` (the
    plain resize) are used.

    Inference output: ``image`` as uint8 Tensor (C, H, W) at the original size (the model
    resizes), with ``height``/``width``; annotations are removed.

    Bad data (training): images that cannot be read (missing or corrupt file, or a size
    different from the dict's), images without annotations, crowd-only images and images with
    no valid non-crowd annotation make the mapper return None; Detectron2's training loader
    then draws another image. Annotations with a zero-area box, without segmentation, with only
    degenerate polygons, with an RLE of the wrong size or with an empty mask (polygon outside
    the image) are dropped. Each case is counted in ``self.bad_data`` and logged (unreadable
    files are logged every time, by name). A non-crowd annotation whose ``category_id`` is not
    in ``[0, num_classes)`` raises a ValueError naming the file and the annotation id: it means
    the dataset and ``MODEL.YOLACT.NUM_CLASSES`` disagree (crowd annotations carry no class and
    are not checked). At inference an unreadable image
    raises an OSError naming the file.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List,
        image_format: str,
        num_classes: int,
        fallback_augmentations: Optional[List] = None,
        max_resample_tries: int = 10,
        log_period: int = 100,
        bad_data: str = "skip",
        max_consecutive_skips: int = 1000,
    ):
        """
        Args:
            is_train: training (augment, build targets) or inference (image only).
            augmentations: a list of :class:`Augmentation` or :class:`Transform`, applied to
                a :class:`YolactAugInput` carrying all boxes and the crowd flags.
            image_format: the format for :func:`detection_utils.read_image`, e.g. "RGB".
            num_classes: number of foreground classes; category ids must be below it.
            fallback_augmentations: used when ``max_resample_tries`` draws of ``augmentations``
                all leave no instance. Defaults to no augmentation.
            max_resample_tries: draws of ``augmentations`` per image before the fallback.
            log_period: see :class:`BadDataCounter`.
            bad_data: "skip" or "error" (``DATALOADER.YOLACT_BAD_DATA``).
            max_consecutive_skips: with "skip", this many skipped training images in a row
                (a dataset whose every image is bad) raise a RuntimeError with the counts
                instead of letting the loader retry forever.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.fallback_augmentations = T.AugmentationList(fallback_augmentations or [])
        self.image_format = image_format
        self.num_classes = num_classes
        self.max_resample_tries = max_resample_tries
        self.bad_data = BadDataCounter(log_period, bad_data)
        self.max_consecutive_skips = max_consecutive_skips
        self._consecutive_skips = 0
        mode = "training" if is_train else "inference"
        logger.info(f"[YolactDatasetMapper] Augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        fallback = [final_resize(cfg)] if is_train else []
        return {
            "is_train": is_train,
            "augmentations": build_yolact_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": cfg.MODEL.YOLACT.NUM_CLASSES,
            "fallback_augmentations": fallback,
            "bad_data": cfg.DATALOADER.YOLACT_BAD_DATA,
        }

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): metadata of one image, in Detectron2 Dataset format.

        Returns:
            dict or None: see the class docstring; None for a skipped training image.
        """
        result = self._map(dataset_dict)
        if result is not None or not self.is_train:
            self._consecutive_skips = 0
            return result
        self._consecutive_skips += 1
        if self._consecutive_skips >= self.max_consecutive_skips:
            raise RuntimeError(
                f"[YolactDatasetMapper] the last {self._consecutive_skips} training images were "
                f"all skipped ({dict(self.bad_data.counts)}): the dataset has no usable image"
            )
        return None

    def _map(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._read_image(dataset_dict)
        if image is None:
            return None
        annotations = dataset_dict.pop("annotations", None)
        if not self.is_train:
            dataset_dict["image"] = _image_to_tensor(image)
            return dataset_dict
        targets = self._parse_annotations(annotations, image.shape[:2], dataset_dict["file_name"])
        if targets is None:
            return None
        result = self._augment_until_valid(image, targets, dataset_dict["file_name"])
        if result is None:
            return None
        image, instances, crowd_boxes = result
        dataset_dict["image"] = _image_to_tensor(image)
        dataset_dict["instances"] = instances
        dataset_dict["crowd_boxes"] = crowd_boxes
        return dataset_dict

    def _read_image(self, dataset_dict):
        file_name = dataset_dict["file_name"]
        try:
            image = utils.read_image(file_name, format=self.image_format)
            utils.check_image_size(dataset_dict, image)
        except (OSError, SyntaxError, ValueError) as e:
            if not self.is_train:
                raise OSError(f"Cannot read image {file_name}: {e}") from e
            self.bad_data.add(UNREADABLE_IMAGE, f"{file_name} ({e})", always_log=True)
            return None
        return image

    def _parse_annotations(self, annotations, image_size, file_name) -> Optional[_Targets]:
        """
        Validate and rasterise the annotations; None (counted) if no instance is usable.
        """
        if not annotations:
            self.bad_data.add(NO_ANNOTATIONS, file_name)
            return None
        boxes, classes, masks, crowd_boxes = [], [], [], []
        for anno in annotations:
            where = f"{file_name}, annotation id {anno.get('id')}"
            is_crowd = bool(anno.get("iscrowd", 0))
            if not is_crowd:
                self._check_category(anno, where)
            box = _annotation_box(anno)
            if box is None:
                self.bad_data.add(BAD_BOX, where)
                continue
            if is_crowd:
                crowd_boxes.append(box)
                continue
            if not anno.get("segmentation"):
                self.bad_data.add(NO_SEGMENTATION, where)
                continue
            mask, reason = _segmentation_to_mask(anno["segmentation"], *image_size)
            if mask is None:
                self.bad_data.add(reason, where)
                continue
            boxes.append(box)
            classes.append(int(anno["category_id"]))
            masks.append(mask)
        if not boxes:
            all_crowd = all(anno.get("iscrowd", 0) for anno in annotations)
            self.bad_data.add(CROWD_ONLY if all_crowd else NO_VALID_INSTANCE, file_name)
            return None
        return _Targets(
            boxes=np.stack(boxes),
            classes=np.asarray(classes, dtype=np.int64),
            masks=masks,
            crowd_boxes=np.asarray(crowd_boxes, dtype=np.float64).reshape(-1, 4),
        )

    def _check_category(self, anno, where):
        category = anno.get("category_id")
        valid = isinstance(category, (int, np.integer)) and 0 <= category < self.num_classes
        if not valid:
            raise ValueError(
                f"{where}: category_id {category!r} is not a contiguous id in "
                f"[0, {self.num_classes}). Check MODEL.YOLACT.NUM_CLASSES and that the dataset is "
                "loaded with load_coco_json / register_coco_instances (which map COCO ids)."
            )

    def _augment_until_valid(self, image, targets, file_name):
        for _ in range(self.max_resample_tries):
            result = _augment(image, targets, self.augmentations)
            if result is not None:
                return result
        self.bad_data.add(AUGMENTATION_FALLBACK, file_name)
        result = _augment(image, targets, self.fallback_augmentations)
        if result is None:
            self.bad_data.add(NOTHING_AFTER_RESIZE, file_name)
        return result


def _image_to_tensor(image):
    """
    Args:
        image (ndarray): (H, W, C) uint8.

    Returns:
        Tensor: (C, H, W) uint8.
    """
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _augment(image, targets: _Targets, augmentations):
    """
    Apply one random draw of ``augmentations`` to the image and its targets.

    Returns:
        tuple[ndarray, Instances, Tensor] or None: the (S, S, C) image, the instances and the
        (M, 4) float32 crowd boxes; None if no instance with a non-empty mask survives.
    """
    aug_input = targets.aug_input(image)
    transforms = augmentations(aug_input)
    image = aug_input.image
    image_size = image.shape[:2]

    num_instances = len(targets.boxes)
    kept = annotations_kept_by_crops(transforms, targets.all_boxes)
    masks = [transforms.apply_segmentation(m) for m, k in zip(targets.masks, kept) if k]
    classes = targets.classes[kept[:num_instances]]
    nonempty = np.asarray([m.any() for m in masks], dtype=bool)
    if not nonempty.any():
        return None

    gt_masks = BitMasks(torch.from_numpy(np.stack(masks)[nonempty]).to(torch.bool))
    instances = Instances(image_size)
    instances.gt_boxes = gt_masks.get_bounding_boxes()
    instances.gt_classes = torch.as_tensor(classes[nonempty], dtype=torch.int64)
    instances.gt_masks = gt_masks
    crowd = targets.crowd_boxes[kept[num_instances:]]
    return image, instances, _transform_crowd_boxes(crowd, transforms, image_size)


def _transform_crowd_boxes(crowd_boxes, transforms, image_size):
    """
    Args:
        crowd_boxes (ndarray): (M, 4) XYXY boxes in the input image.
        transforms (TransformList): the applied transforms.
        image_size (tuple[int, int]): (H, W) of the output image.

    Returns:
        Tensor: (M', 4) float32 transformed boxes clipped to the image, zero-area ones removed.
    """
    boxes = Boxes(torch.as_tensor(transforms.apply_box(crowd_boxes), dtype=torch.float32))
    boxes.clip(image_size)
    return boxes.tensor[boxes.nonempty(threshold=0.0)]


def validate_training_data(cfg, dataset_dicts) -> int:
    """
    Checks, before training, every record the way the training mapper would with
    ``DATALOADER.YOLACT_BAD_DATA`` "error": the image file exists and every annotation is
    usable (images are not decoded here; a corrupt file is reported when it is read).

    Returns:
        int: the number of records checked.

    Raises:
        ValueError / FileNotFoundError: the first problem, naming the file and annotation.
    """
    mapper = YolactDatasetMapper(cfg, True)
    mapper.bad_data.policy = "error"
    for record in dataset_dicts:
        file_name = record["file_name"]
        if not os.path.isfile(file_name):
            raise FileNotFoundError(f"{file_name}: image file does not exist")
        size = (record["height"], record["width"])
        mapper._parse_annotations(record.get("annotations"), size, file_name)
    return len(dataset_dicts)
