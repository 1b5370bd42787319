# Copyright (c) yolact_d2 contributors.
"""A ``DefaultPredictor`` that also predicts a list of images as one batch."""

import contextlib
import numpy as np
from typing import Dict, List, Sequence, Union

import torch

import detectron2.data.transforms as T
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from yolact_d2.checkpoint.checkpointer import YolactCheckpointer
from yolact_d2.data.image_io import as_bgr_uint8, model_input
from yolact_d2.utils.stages import stage

__all__ = ["YolactPredictor"]


class YolactPredictor(DefaultPredictor):
    """
    Detectron2's :class:`DefaultPredictor` (every existing use works unchanged: one BGR image in,
    ``{"instances": Instances}`` out) that also takes a list of images and runs them through
    the model as one batch, returning one output per image; the outputs equal those of
    one-by-one calls (tested value by value).

    Example::

        predictor = YolactPredictor(cfg)
        outputs = predictor([cv2.imread(p) for p in paths])  # a list of {"instances": ...}
    """

    def __init__(self, cfg):
        """
        As :class:`DefaultPredictor`, with the weights loaded by
        :class:`~yolact_d2.checkpoint.checkpointer.YolactCheckpointer`: weights of another
        architecture are a :class:`~yolact_d2.checkpoint.checkpointer.WeightsMismatchError`
        naming both unless ``MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH``, an unreachable URL a
        :class:`~yolact_d2.checkpoint.checkpointer.WeightsUnavailableError` naming the cache
        file that would serve it.
        """
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        if cfg.MODEL.META_ARCHITECTURE == "Yolact":
            allow = cfg.MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH
            YolactCheckpointer(self.model, allow_mismatch=allow).load(cfg.MODEL.WEIGHTS)
        else:  # another Detectron2 model batched or benchmarked the same way (Mask R-CNN)
            DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        size = cfg.INPUT.MIN_SIZE_TEST
        self.aug = T.ResizeShortestEdge([size, size], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', not {self.input_format!r}")

    def autocast(self):
        """The context the model runs in (subclasses add autocast); a no-op here."""
        return contextlib.nullcontext()

    def __call__(self, original_image: Union[np.ndarray, Sequence[np.ndarray]]):
        """
        Args:
            original_image (ndarray or list[ndarray]): an (H, W, 3) uint8 BGR image, or a list
                of them (any sizes); grayscale, BGRA and 16-bit arrays are converted
                (:func:`~yolact_d2.data.image_io.as_bgr_uint8`), other arrays are a clear
                ``ImageInputError``.

        Returns:
            dict, or a list of dicts for a list: {"instances": Instances} at each image's size.
        """
        if isinstance(original_image, (list, tuple)):
            return self.predict_batch(original_image)
        with self.autocast():
            return super().__call__(as_bgr_uint8(original_image))

    def prepare(self, original_image: np.ndarray) -> Dict:
        """
        The model input ``DefaultPredictor`` builds from a BGR image: channel order of
        ``INPUT.FORMAT``, test-time resize, (C, H, W) float32 tensor and the original size.
        """
        return model_input(
            original_image, self.input_format, self.aug.get_transform(original_image)
        )

    def predict_batch(self, original_images: Sequence[np.ndarray]) -> List[Dict]:
        """
        Args:
            original_images (list[ndarray]): (H, W, 3) uint8 BGR images.

        Returns:
            list[dict]: {"instances": Instances} per image.
        """
        if not original_images:
            return []
        with torch.no_grad(), self.autocast():
            with stage("preprocess"):
                inputs = [
                    self.prepare(as_bgr_uint8(image, f"image {i} of the batch"))
                    for i, image in enumerate(original_images)
                ]
            return self.model(inputs)
