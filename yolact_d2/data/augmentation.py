# Copyright (c) yolact_d2 contributors.
"""
YOLACT's training augmentation (the reference ``SSDAugmentation``) as Detectron2 augmentations.

The reference pipeline is, in order: photometric distortion, expand (zoom out), random sample
crop, horizontal mirror and a resize to ``S x S`` that ignores the aspect ratio. Every step is
an :class:`Augmentation` here that returns a deterministic :class:`Transform`, so the same
transforms can be replayed on masks and boxes (see :func:`annotations_kept_by_crops` for the
reference's rule that decides which annotations survive a crop).
"""

import numpy as np

import cv2
from fvcore.transforms.transform import (
    CropTransform,
    NoOpTransform,
    PadTransform,
    Transform,
    TransformList,
)
from PIL import Image

from detectron2.data import transforms as T

from yolact_d2.layers.input_size import aspect_preserving_size

__all__ = [
    "YolactAugInput",
    "PhotometricDistortTransform",
    "PhotometricDistort",
    "ExpandTransform",
    "Expand",
    "RandomSampleCrop",
    "BilinearResizeTransform",
    "SquareResize",
    "AspectPreservingResize",
    "centres_inside",
    "annotations_kept_by_crops",
    "build_yolact_augmentation",
]

_HSV_CONVERSIONS = {
    "BGR": (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR),
    "RGB": (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB),
}


def _restore_dtype(image, dtype):
    """
    Cast a float result back to the input's dtype.

    Args:
        image (ndarray): float32 array, any shape.
        dtype: the dtype of the augmentation's input.

    Returns:
        ndarray: ``image`` rounded and clipped to [0, 255] when ``dtype`` is uint8, else ``image``
        unchanged (float results are not clipped, as in the reference).
    """
    if dtype == np.uint8:
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image


class YolactAugInput(T.AugInput):
    """
    An :class:`AugInput` that also says which of its boxes are crowd annotations.

    :class:`RandomSampleCrop` needs this: a crop is accepted only if it keeps the centre of at
    least one non-crowd box. ``is_crowd`` is not changed by transforms.
    """

    def __init__(self, image, *, boxes=None, is_crowd=None, sem_seg=None):
        """
        Args:
            image (ndarray): (H, W) or (H, W, C), uint8 or float.
            boxes (ndarray or None): (N, 4) float XYXY boxes in absolute pixels.
            is_crowd (ndarray or None): (N,) bool; None means no box is a crowd.
            sem_seg (ndarray or None): (H, W) integer segmentation.
        """
        super().__init__(image, boxes=boxes, sem_seg=sem_seg)
        self.is_crowd = None if is_crowd is None else np.asarray(is_crowd, dtype=bool)


class PhotometricDistortTransform(Transform):
    """
    The reference ``PhotometricDistort`` with fixed parameters.

    The image is processed in float32: ``+ brightness_delta``, then ``* contrast_alpha`` either
    before or after the HSV step (``contrast_first``), where the HSV step converts to OpenCV's
    float HSV (H in degrees), multiplies S by ``saturation_scale``, adds ``hue_delta`` to H
    (wrapping at 360) and converts back. The HSV round trip is skipped when it is an identity
    (scale 1, delta 0). A uint8 input gives a uint8 output, rounded and clipped to [0, 255] once
    at the end; the reference keeps the unclipped float values, which a uint8 pipeline cannot.
    Float inputs are returned as unclipped float32, as in the reference.
    Coordinates and segmentations are unchanged.
    """

    def __init__(
        self,
        brightness_delta: float = 0.0,
        contrast_alpha: float = 1.0,
        saturation_scale: float = 1.0,
        hue_delta: float = 0.0,
        contrast_first: bool = True,
        image_format: str = "BGR",
    ):
        """
        Args:
            brightness_delta: added to every channel.
            contrast_alpha: every channel is multiplied by it.
            saturation_scale: factor on the HSV saturation.
            hue_delta: degrees added to the HSV hue.
            contrast_first: apply the contrast before (True) or after (False) the HSV step.
            image_format: channel order of the image, "BGR" or "RGB".
        """
        super().__init__()
        if image_format not in _HSV_CONVERSIONS:
            raise ValueError(f"PhotometricDistort supports BGR or RGB images, got {image_format}")
        self._set_attributes(locals())

    def apply_image(self, img):
        """
        Args:
            img (ndarray): (H, W, 3) uint8 or float, in ``image_format`` channel order.

        Returns:
            ndarray: (H, W, 3), same dtype as ``img`` (see the class docstring for clipping).
        """
        out = img.astype(np.float32) + np.float32(self.brightness_delta)
        if self.contrast_first:
            out *= np.float32(self.contrast_alpha)
        out = self._adjust_hsv(out)
        if not self.contrast_first:
            out *= np.float32(self.contrast_alpha)
        return _restore_dtype(out, img.dtype)

    def _adjust_hsv(self, img):
        if self.saturation_scale == 1.0 and self.hue_delta == 0.0:
            return img
        to_hsv, from_hsv = _HSV_CONVERSIONS[self.image_format]
        hsv = cv2.cvtColor(np.ascontiguousarray(img), to_hsv)
        hsv[..., 1] *= np.float32(self.saturation_scale)
        hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(self.hue_delta), np.float32(360.0))
        return cv2.cvtColor(hsv, from_hsv)

    def apply_coords(self, coords):
        return coords

    def apply_segmentation(self, segmentation):
        return segmentation

    def inverse(self):
        return NoOpTransform()


class PhotometricDistort(T.Augmentation):
    """
    Samples a :class:`PhotometricDistortTransform` like the reference: brightness with
    probability ``prob`` (delta ~ U(-brightness_delta, brightness_delta)); contrast first or
    last with probability 1/2; contrast, saturation and hue each with probability ``prob``
    (alpha ~ U(contrast_range), scale ~ U(saturation_range), delta ~ U(-hue_delta, hue_delta)).
    """

    def __init__(
        self,
        image_format="BGR",
        brightness_delta=32.0,
        contrast_range=(0.5, 1.5),
        saturation_range=(0.5, 1.5),
        hue_delta=18.0,
        prob=0.5,
    ):
        """
        Args:
            image_format (str): "BGR" or "RGB", the channel order of the images.
            brightness_delta (float): largest absolute brightness change.
            contrast_range (tuple[float, float]): range of the contrast factor.
            saturation_range (tuple[float, float]): range of the saturation factor.
            hue_delta (float): largest absolute hue change, in degrees.
            prob (float): probability of applying each of the four distortions.
        """
        super().__init__()
        if image_format not in _HSV_CONVERSIONS:
            raise ValueError(f"PhotometricDistort supports BGR or RGB images, got {image_format}")
        self._init(locals())

    def _maybe_uniform(self, low, high, default):
        if self._rand_range() < self.prob:
            return float(self._rand_range(low, high))
        return default

    def get_transform(self, image):
        return PhotometricDistortTransform(
            brightness_delta=self._maybe_uniform(
                -self.brightness_delta, self.brightness_delta, 0.0
            ),
            contrast_alpha=self._maybe_uniform(*self.contrast_range, 1.0),
            saturation_scale=self._maybe_uniform(*self.saturation_range, 1.0),
            hue_delta=self._maybe_uniform(-self.hue_delta, self.hue_delta, 0.0),
            contrast_first=bool(self._rand_range() < 0.5),
            image_format=self.image_format,
        )


class ExpandTransform(PadTransform):
    """
    Places the image on a larger canvas filled with ``fill`` (the pixel mean), at offset
    ``(x0, y0)``. Segmentations are padded with 0; coordinates are shifted by ``(x0, y0)``.
    """

    def __init__(self, x0: int, y0: int, x1: int, y1: int, orig_w: int, orig_h: int, fill):
        """
        Args:
            x0, y0 (int): canvas pixels left of and above the image.
            x1, y1 (int): canvas pixels right of and below the image.
            orig_w, orig_h (int): size of the input image.
            fill (float or sequence[float]): canvas value, one per channel in the image's
                channel order (rounded for uint8 images).
        """
        super().__init__(x0, y0, x1, y1, orig_w=orig_w, orig_h=orig_h)
        self.fill = tuple(np.atleast_1d(np.asarray(fill, dtype=np.float64)).tolist())

    def _fill_value(self, img):
        fill = np.asarray(self.fill, dtype=np.float32)
        channels = img.shape[2] if img.ndim == 3 else 1
        if fill.size not in (1, channels):
            raise ValueError(f"Expand fill has {fill.size} values but the image {channels}")
        if img.ndim == 2:
            fill = fill.reshape(())
        return _restore_dtype(fill, img.dtype)

    def apply_image(self, img):
        """
        Args:
            img (ndarray): (H, W) or (H, W, C).

        Returns:
            ndarray: (H + y0 + y1, W + x0 + x1[, C]), same dtype.
        """
        h, w = img.shape[:2]
        canvas_shape = (h + self.y0 + self.y1, w + self.x0 + self.x1) + img.shape[2:]
        canvas = np.empty(canvas_shape, dtype=img.dtype)
        canvas[...] = self._fill_value(img)
        canvas[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = img
        return canvas


class Expand(T.Augmentation):
    """
    The reference ``Expand`` (zoom out): with probability ``prob``, the image is put at a random
    offset on a canvas ``ratio`` times larger, ratio ~ U(1, max_ratio), filled with ``fill``.
    Like the reference, the canvas side is ``int(side * ratio)`` and the offset is truncated.
    """

    def __init__(self, fill, max_ratio=4.0, prob=0.5):
        """
        Args:
            fill (sequence[float]): canvas value per channel, in the image's channel order
                (usually ``cfg.MODEL.PIXEL_MEAN``).
            max_ratio (float): largest canvas side / image side.
            prob (float): probability of expanding.
        """
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        if self._rand_range() >= self.prob:
            return NoOpTransform()
        h, w = image.shape[:2]
        ratio = self._rand_range(1.0, self.max_ratio)
        x0 = int(self._rand_range(0.0, w * ratio - w))
        y0 = int(self._rand_range(0.0, h * ratio - h))
        x1 = max(int(w * ratio) - w - x0, 0)
        y1 = max(int(h * ratio) - h - y0, 0)
        return ExpandTransform(x0, y0, x1, y1, w, h, self.fill)


def centres_inside(boxes, rect):
    """
    Args:
        boxes (ndarray): (N, 4) XYXY boxes.
        rect (sequence[float]): the window (x0, y0, x1, y1).

    Returns:
        ndarray: (N,) bool, whether each box centre lies strictly inside the window (the
        reference's test).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    return (rect[0] < cx) & (cx < rect[2]) & (rect[1] < cy) & (cy < rect[3])


class RandomSampleCrop(T.Augmentation):
    """
    The reference ``RandomSampleCrop`` (SSD-style crop).

    The reference draws one of six modes per round: "no crop" or one of five min-IoU modes
    (0.1, 0.3, 0.7, 0.9, none). Its IoU test ``overlap.min() < min_iou and max_iou <
    overlap.max()`` can never pass because ``max_iou`` is always +inf, so the five IoU modes
    behave identically; we reproduce exactly that, drawing "no crop" with probability
    ``no_crop_prob`` (1/6) per round and otherwise an unconstrained crop. A round makes up to
    ``max_trials`` trials: w ~ U(min_scale, 1) * W, h ~ U(min_scale, 1) * H, rejected unless
    0.5 <= h / w <= 2, at a random position, truncated to integers. A trial is accepted when
    the centre of at least one non-crowd box lies strictly inside it; annotations whose centre
    is outside are dropped by the caller (:func:`annotations_kept_by_crops`). The reference
    loops forever; we stop after ``max_rounds`` rounds (or at once when there is no non-crowd
    box, where the reference can only end by drawing "no crop") and do not crop.

    Reads ``image``, ``boxes`` and, if the input has it, ``is_crowd`` (see
    :class:`YolactAugInput`).
    """

    def __init__(
        self, min_scale=0.3, max_aspect_ratio=2.0, max_trials=50, no_crop_prob=1 / 6, max_rounds=50
    ):
        """
        Args:
            min_scale (float): smallest crop side as a fraction of the image side.
            max_aspect_ratio (float): crops need 1 / max_aspect_ratio <= h / w <= max_aspect_ratio.
            max_trials (int): crop trials per round.
            no_crop_prob (float): probability that a round returns the whole image.
            max_rounds (int): rounds before giving up (returning the whole image).
        """
        super().__init__()
        self._init(locals())

    def __call__(self, aug_input):
        if aug_input.boxes is None:
            raise ValueError("RandomSampleCrop needs boxes: use AugInput(image, boxes=...)")
        is_crowd = getattr(aug_input, "is_crowd", None)
        tfm = self.get_transform(aug_input.image, aug_input.boxes, is_crowd)
        aug_input.transform(tfm)
        return tfm

    def get_transform(self, image, boxes, is_crowd=None):
        """
        Args:
            image (ndarray): (H, W[, C]).
            boxes (ndarray): (N, 4) XYXY boxes in absolute pixels.
            is_crowd (ndarray or None): (N,) bool.

        Returns:
            Transform: a :class:`CropTransform` or a :class:`NoOpTransform`.
        """
        h, w = image.shape[:2]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        non_crowd = np.ones(len(boxes), bool) if is_crowd is None else ~np.asarray(is_crowd, bool)
        if not non_crowd.any():
            return NoOpTransform()
        for _ in range(self.max_rounds):
            if self._rand_range() < self.no_crop_prob:
                return NoOpTransform()
            for _ in range(self.max_trials):
                rect = self._sample_rect(w, h)
                if rect is not None and (centres_inside(boxes, rect) & non_crowd).any():
                    x0, y0, x1, y1 = rect
                    return CropTransform(x0, y0, x1 - x0, y1 - y0, orig_w=w, orig_h=h)
        return NoOpTransform()

    def _sample_rect(self, w, h):
        crop_w = self._rand_range(self.min_scale * w, w)
        crop_h = self._rand_range(self.min_scale * h, h)
        if not 1.0 / self.max_aspect_ratio <= crop_h / crop_w <= self.max_aspect_ratio:
            return None
        left = self._rand_range(0.0, w - crop_w)
        top = self._rand_range(0.0, h - crop_h)
        rect = (int(left), int(top), int(left + crop_w), int(top + crop_h))
        if rect[2] <= rect[0] or rect[3] <= rect[1]:
            return None
        return rect


def annotations_kept_by_crops(transforms, boxes):
    """
    Which annotations survive the crops in ``transforms``.

    The boxes are replayed through ``transforms``; at every :class:`CropTransform` a box whose
    centre is not strictly inside the crop window is dropped (the rule
    :class:`RandomSampleCrop` uses to accept a crop). Other transforms drop nothing.

    Args:
        transforms (Transform or TransformList): what the augmentations returned.
        boxes (ndarray): (N, 4) XYXY boxes in absolute pixels of the input image.

    Returns:
        ndarray: (N,) bool.
    """
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    keep = np.ones(len(boxes), dtype=bool)
    steps = transforms.transforms if isinstance(transforms, TransformList) else [transforms]
    for tfm in steps:
        if isinstance(tfm, CropTransform):
            keep &= centres_inside(boxes, (tfm.x0, tfm.y0, tfm.x0 + tfm.w, tfm.y0 + tfm.h))
        boxes = tfm.apply_box(boxes)
    return keep


class BilinearResizeTransform(T.ResizeTransform):
    """
    Resize with OpenCV's bilinear interpolation (``cv2.INTER_LINEAR``, no antialiasing, as the
    reference). Detectron2's :class:`ResizeTransform` uses PIL for uint8 images, which
    antialiases when shrinking. Binary segmentations are resized bilinearly and thresholded at
    ``mask_threshold`` (the reference resizes masks bilinearly too), so they must hold 0/1.
    """

    def __init__(self, h, w, new_h, new_w, mask_threshold=0.5):
        """
        Args:
            h, w (int): input size.
            new_h, new_w (int): output size.
            mask_threshold (float): a resized segmentation pixel is 1 when its value >= this.
        """
        super().__init__(h, w, new_h, new_w, interp=Image.BILINEAR)
        self.mask_threshold = mask_threshold

    def _resize(self, img):
        out = cv2.resize(
            img.astype(np.float32), (self.new_w, self.new_h), interpolation=cv2.INTER_LINEAR
        )
        return out.reshape((self.new_h, self.new_w) + img.shape[2:])

    def apply_image(self, img, interp=None):
        """
        Args:
            img (ndarray): (h, w) or (h, w, C), uint8 or float.

        Returns:
            ndarray: (new_h, new_w[, C]), same dtype (uint8 is rounded).
        """
        return _restore_dtype(self._resize(img), img.dtype)

    def apply_segmentation(self, segmentation):
        """
        Args:
            segmentation (ndarray): (h, w) binary mask, any integer or bool dtype.

        Returns:
            ndarray: (new_h, new_w) binary mask, same dtype.
        """
        return (self._resize(segmentation) >= self.mask_threshold).astype(segmentation.dtype)

    def inverse(self):
        return BilinearResizeTransform(self.new_h, self.new_w, self.h, self.w, self.mask_threshold)


class SquareResize(T.Augmentation):
    """
    Resize to ``size x size`` ignoring the aspect ratio (the reference's final step).
    """

    def __init__(self, size):
        """
        Args:
            size (int): the output side S.
        """
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        return BilinearResizeTransform(h, w, self.size, self.size)


class AspectPreservingResize(T.Augmentation):
    """
    Resize keeping the aspect ratio: the longest side to ``size``, the other to
    :func:`~yolact_d2.layers.input_size.aspect_preserving_size` (the model pads the batch).
    """

    def __init__(self, size):
        """
        Args:
            size (int): the longest side S.
        """
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        return BilinearResizeTransform(h, w, *aspect_preserving_size(h, w, self.size))


def final_resize(cfg) -> T.Augmentation:
    """The last training augmentation: :class:`SquareResize` or :class:`AspectPreservingResize`."""
    y = cfg.MODEL.YOLACT
    return (AspectPreservingResize if y.PRESERVE_ASPECT_RATIO else SquareResize)(y.INPUT_SIZE)


def build_yolact_augmentation(cfg, is_train):
    """
    The reference ``SSDAugmentation`` as a list of Detectron2 augmentations.

    Args:
        cfg (CfgNode): a config with :func:`add_yolact_config` options.
        is_train (bool): training or inference.

    Returns:
        list[Augmentation]: for training, the enabled ones of photometric distortion, expand,
        random sample crop and mirror, then the resize to ``MODEL.YOLACT.INPUT_SIZE`` squared
        (:func:`final_resize`: or its longest side, with ``MODEL.YOLACT.PRESERVE_ASPECT_RATIO``).
        For inference an empty list: the model resizes its inputs itself.
    """
    if not is_train:
        return []
    opts = cfg.INPUT.YOLACT
    augs = []
    if opts.PHOTOMETRIC:
        augs.append(PhotometricDistort(image_format=cfg.INPUT.FORMAT))
    if opts.EXPAND:
        augs.append(Expand(fill=cfg.MODEL.PIXEL_MEAN, max_ratio=opts.EXPAND_MAX_RATIO))
    if opts.RANDOM_SAMPLE_CROP:
        augs.append(RandomSampleCrop())
    if opts.MIRROR:
        augs.append(T.RandomFlip(prob=0.5, horizontal=True, vertical=False))
    augs.append(final_resize(cfg))
    return augs
