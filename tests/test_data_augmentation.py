# Copyright (c) yolact_d2 contributors.
import numpy as np

import pytest
from fvcore.transforms.transform import CropTransform, NoOpTransform, TransformList

from detectron2.data import transforms as T

from yolact_d2.config import get_yolact_cfg
from yolact_d2.data.augmentation import (
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

MEAN_RGB = (123.68, 116.78, 103.94)


def _tight_box(mask):
    """XYXY box of the nonzero pixels of an (H, W) mask (x1, y1 exclusive)."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def _rect_mask(h, w, box):
    mask = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = (int(v) for v in box)
    mask[y0:y1, x0:x1] = 1
    return mask


def _train_cfg(size=64):
    cfg = get_yolact_cfg()
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = list(MEAN_RGB)
    cfg.MODEL.YOLACT.INPUT_SIZE = size
    return cfg


# --------------------------------------------------------------------------------------------
# Photometric distortion
# --------------------------------------------------------------------------------------------
def test_brightness_and_contrast_exact_and_clipped():
    img = np.array([[[10, 100, 250]]], np.uint8)
    out = PhotometricDistortTransform(brightness_delta=20).apply_image(img)
    assert out.dtype == np.uint8
    assert out.tolist() == [[[30, 120, 255]]]  # 270 is clipped
    out = PhotometricDistortTransform(brightness_delta=10, contrast_alpha=1.5).apply_image(img)
    assert out.tolist() == [[[30, 165, 255]]]  # (x + 10) * 1.5
    img_before = img.copy()
    PhotometricDistortTransform(brightness_delta=-10).apply_image(img)
    assert np.array_equal(img, img_before)  # the input is not modified


def test_float_input_is_not_clipped():
    img = np.array([[[10.0, 100.0, 250.0]]], np.float32)
    out = PhotometricDistortTransform(brightness_delta=20, contrast_alpha=2.0).apply_image(img)
    assert out.dtype == np.float32
    assert np.allclose(out, [[[60.0, 240.0, 540.0]]])


@pytest.mark.parametrize(
    "image_format,red,green,blue",
    [
        ("RGB", (255, 0, 0), (0, 255, 0), (0, 0, 255)),
        ("BGR", (0, 0, 255), (0, 255, 0), (255, 0, 0)),
    ],
)
def test_hue_rotation_in_degrees_with_wrap(image_format, red, green, blue):
    img = np.array([[red]], np.uint8)
    plus = PhotometricDistortTransform(hue_delta=120, image_format=image_format)
    minus = PhotometricDistortTransform(hue_delta=-120, image_format=image_format)
    assert tuple(plus.apply_image(img)[0, 0]) == green
    assert tuple(minus.apply_image(img)[0, 0]) == blue  # 0 - 120 wraps to 240


def test_saturation_scale():
    img = np.array([[[255, 0, 0]]], np.uint8)
    assert PhotometricDistortTransform(saturation_scale=0.0, image_format="RGB").apply_image(
        img
    ).tolist() == [[[255, 255, 255]]]
    half = PhotometricDistortTransform(saturation_scale=0.5, image_format="RGB").apply_image(img)
    assert half.tolist() == [[[255, 128, 128]]]  # S = 0.5 -> min = 127.5, rounded


def test_contrast_before_or_after_hsv_step():
    # OpenCV's HSV is homogeneous in the intensity (V scales, S and H do not change), so for
    # non-negative pixels the two reference orderings agree: (100, 80, 60) has V = 100, S = 0.4;
    # alpha 1.4 gives V = 140, the saturation x1.5 gives S = 0.6, hence min = 56.
    img = np.array([[[100, 80, 60]]], np.uint8)
    kwargs = dict(contrast_alpha=1.4, saturation_scale=1.5, image_format="RGB")
    first = PhotometricDistortTransform(contrast_first=True, **kwargs).apply_image(img)
    last = PhotometricDistortTransform(contrast_first=False, **kwargs).apply_image(img)
    assert first.tolist() == last.tolist() == [[[140, 98, 56]]]


def test_photometric_leaves_geometry_alone():
    tfm = PhotometricDistortTransform(brightness_delta=5, contrast_alpha=0.7, hue_delta=3)
    coords = np.array([[1.0, 2.0], [3.0, 4.0]])
    mask = np.eye(4, dtype=np.uint8)
    assert np.array_equal(tfm.apply_coords(coords.copy()), coords)
    assert np.array_equal(tfm.apply_segmentation(mask), mask)
    assert isinstance(tfm.inverse(), NoOpTransform)


def test_photometric_sampling_ranges():
    np.random.seed(0)
    image = np.zeros((4, 4, 3), np.uint8)
    aug = PhotometricDistort(image_format="RGB")
    tfms = [aug.get_transform(image) for _ in range(400)]
    deltas = np.array([t.brightness_delta for t in tfms])
    alphas = np.array([t.contrast_alpha for t in tfms])
    scales = np.array([t.saturation_scale for t in tfms])
    hues = np.array([t.hue_delta for t in tfms])
    for values, identity, low, high in [
        (deltas, 0.0, -32, 32),
        (alphas, 1.0, 0.5, 1.5),
        (scales, 1.0, 0.5, 1.5),
        (hues, 0.0, -18, 18),
    ]:
        applied = values != identity
        assert 0.4 < applied.mean() < 0.6
        assert values.min() >= low and values.max() <= high
    assert 0.4 < np.mean([t.contrast_first for t in tfms]) < 0.6
    off = PhotometricDistort(image_format="RGB", prob=0.0).get_transform(image)
    assert (off.brightness_delta, off.contrast_alpha, off.saturation_scale, off.hue_delta) == (
        0.0,
        1.0,
        1.0,
        0.0,
    )
    with pytest.raises(ValueError):
        PhotometricDistort(image_format="L")


# --------------------------------------------------------------------------------------------
# Expand
# --------------------------------------------------------------------------------------------
def test_expand_places_image_on_mean_canvas():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) + 1
    tfm = ExpandTransform(1, 2, 2, 0, orig_w=3, orig_h=2, fill=MEAN_RGB)
    out = tfm.apply_image(img)
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    assert np.array_equal(out[2:4, 1:4], img)
    canvas = np.ones((4, 6), bool)
    canvas[2:4, 1:4] = False
    assert (out[canvas] == np.array([124, 117, 104], np.uint8)).all()  # rounded mean

    out_float = tfm.apply_image(img.astype(np.float32))
    assert np.allclose(out_float[0, 0], MEAN_RGB, atol=1e-4)

    mask = np.ones((2, 3), np.uint8)
    padded = tfm.apply_segmentation(mask)
    assert padded.shape == (4, 6) and padded.sum() == 6 and padded[2:4, 1:4].all()
    assert np.array_equal(tfm.apply_box(np.array([[0.0, 0.0, 3.0, 2.0]])), [[1, 2, 4, 4]])
    assert isinstance(tfm.inverse(), CropTransform)


def test_expand_fill_must_match_channels():
    tfm = ExpandTransform(1, 1, 1, 1, orig_w=2, orig_h=2, fill=MEAN_RGB)
    with pytest.raises(ValueError):
        tfm.apply_image(np.zeros((2, 2), np.uint8))
    gray = ExpandTransform(1, 1, 1, 1, orig_w=2, orig_h=2, fill=[7.4])
    assert gray.apply_image(np.zeros((2, 2), np.uint8))[0, 0] == 7


def test_expand_sampling_follows_reference():
    np.random.seed(1)
    image = np.zeros((30, 40, 3), np.uint8)
    aug = Expand(fill=MEAN_RGB, max_ratio=4.0)
    tfms = [aug.get_transform(image) for _ in range(300)]
    expanded = [t for t in tfms if isinstance(t, ExpandTransform)]
    assert 0.4 < len(expanded) / len(tfms) < 0.6
    assert all(isinstance(t, (ExpandTransform, NoOpTransform)) for t in tfms)
    for t in expanded:
        canvas_w, canvas_h = 40 + t.x0 + t.x1, 30 + t.y0 + t.y1
        assert 40 <= canvas_w <= 160 and 30 <= canvas_h <= 120
        assert min(t.x0, t.x1, t.y0, t.y1) >= 0
        # one ratio for both sides (up to the integer truncation)
        assert abs(canvas_w / 40 - canvas_h / 30) < 1 / 30 + 1e-9
    assert isinstance(Expand(fill=MEAN_RGB, prob=0.0).get_transform(image), NoOpTransform)


# --------------------------------------------------------------------------------------------
# RandomSampleCrop and the centre rule
# --------------------------------------------------------------------------------------------
def test_centres_inside_is_strict():
    boxes = np.array([[20, 20, 30, 30], [0, 0, 18, 18], [0, 0, 20, 20], [40, 40, 58, 58]], float)
    assert centres_inside(boxes, (10, 10, 50, 50)).tolist() == [True, False, False, True]


def test_crop_keeps_exactly_the_annotations_with_centre_inside():
    boxes = np.array(
        [
            [20, 20, 30, 30],  # centre (25, 25): inside
            [0, 0, 18, 18],  # centre (9, 9): outside although it overlaps the crop
            [0, 0, 20, 20],  # centre (10, 10): on the border -> outside
            [45, 12, 70, 40],  # centre (57.5, 26): outside on the right
            [30, 40, 60, 58],  # centre (45, 49): inside although it sticks out
        ],
        float,
    )
    crop = CropTransform(10, 10, 40, 40, orig_w=80, orig_h=80)
    assert annotations_kept_by_crops(crop, boxes).tolist() == [True, False, False, False, True]
    # after an expand by (5, 3) the centres are tested where they are when the crop happens:
    # (30, 28) in, (14, 12) in, (15, 13) in, (62.5, 29) out, (50, 52) on the border -> out
    shifted = TransformList([ExpandTransform(5, 3, 0, 0, 80, 80, MEAN_RGB), crop])
    assert annotations_kept_by_crops(shifted, boxes).tolist() == [True, True, True, False, False]
    flip_then_resize = TransformList([T.HFlipTransform(80), BilinearResizeTransform(80, 80, 5, 5)])
    assert annotations_kept_by_crops(flip_then_resize, boxes).all()


def test_random_sample_crop_constraints():
    np.random.seed(2)
    image = np.zeros((100, 120, 3), np.uint8)
    boxes = np.array([[5, 5, 25, 25], [90, 70, 118, 98]], float)  # crowd, non-crowd
    is_crowd = np.array([True, False])
    aug = RandomSampleCrop()
    tfms = [aug.get_transform(image, boxes, is_crowd) for _ in range(600)]
    crops = [t for t in tfms if isinstance(t, CropTransform)]
    # P(no crop) per round is 1/6 (the reference's "None" mode)
    assert 0.11 < 1 - len(crops) / len(tfms) < 0.23
    for t in crops:
        assert 0.3 * 120 - 1 <= t.w <= 120 and 0.3 * 100 - 1 <= t.h <= 100
        assert 0.5 - 0.05 <= t.h / t.w <= 2 + 0.1
        assert t.x0 >= 0 and t.y0 >= 0 and t.x0 + t.w <= 120 and t.y0 + t.h <= 100
        # a crop is accepted only for the non-crowd centre (104, 84)
        assert t.x0 < 104 < t.x0 + t.w and t.y0 < 84 < t.y0 + t.h


def test_random_sample_crop_edge_cases():
    image = np.zeros((50, 50, 3), np.uint8)
    boxes = np.array([[10, 10, 20, 20]], float)
    assert isinstance(
        RandomSampleCrop().get_transform(image, boxes, np.array([True])), NoOpTransform
    )  # crowd only: nothing to keep
    assert isinstance(RandomSampleCrop(no_crop_prob=1.0).get_transform(image, boxes), NoOpTransform)
    np.random.seed(3)
    always = RandomSampleCrop(no_crop_prob=0.0)
    assert all(isinstance(always.get_transform(image, boxes), CropTransform) for _ in range(20))
    with pytest.raises(ValueError):
        RandomSampleCrop()(T.AugInput(image))  # boxes are required
    # a plain AugInput (no is_crowd) works: all boxes are non-crowd
    aug_input = T.AugInput(image, boxes=boxes.astype(np.float32))
    tfm = always(aug_input)
    assert isinstance(tfm, CropTransform) and aug_input.image.shape == (tfm.h, tfm.w, 3)


# --------------------------------------------------------------------------------------------
# Mirror and resize
# --------------------------------------------------------------------------------------------
def test_mirror_flips_boxes_and_masks_consistently():
    image = np.zeros((6, 10, 3), np.uint8)
    box = np.array([[2.0, 1.0, 5.0, 3.0]])
    mask = _rect_mask(6, 10, box[0])
    aug_input = YolactAugInput(image, boxes=box.copy())
    tfm = T.RandomFlip(prob=1.0)(aug_input)
    flipped_mask = tfm.apply_segmentation(mask)
    assert aug_input.boxes.tolist() == [[5.0, 1.0, 8.0, 3.0]]
    assert np.array_equal(_tight_box(flipped_mask), aug_input.boxes[0])
    assert np.array_equal(flipped_mask[:, ::-1], mask)


def test_bilinear_resize_image_box_and_mask():
    tfm = BilinearResizeTransform(4, 4, 8, 8)
    mask = _rect_mask(4, 4, (1, 1, 3, 3))
    resized = tfm.apply_segmentation(mask)
    assert resized.dtype == np.uint8
    assert np.array_equal(_tight_box(resized), [2, 2, 6, 6])
    assert np.array_equal(tfm.apply_box(np.array([[1.0, 1.0, 3.0, 3.0]])), [[2, 2, 6, 6]])
    image = np.full((4, 4, 3), 77, np.uint8)
    image[0, 0] = 200
    out = tfm.apply_image(image)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out[4:, 4:] == 77).all() and out[0, 0, 0] == 200
    assert tfm.apply_image(np.zeros((4, 4, 1), np.uint8)).shape == (8, 8, 1)
    # no antialiasing when shrinking (cv2 INTER_LINEAR, like the reference)
    stripes = np.zeros((4, 8), np.float32)
    stripes[:, 1::2] = 100
    half = BilinearResizeTransform(4, 8, 4, 4).apply_image(stripes)
    assert np.allclose(half, 50.0)
    square = SquareResize(5).get_transform(np.zeros((3, 9, 3), np.uint8))
    assert (square.new_h, square.new_w) == (5, 5)
    assert isinstance(tfm.inverse(), BilinearResizeTransform)


# --------------------------------------------------------------------------------------------
# The whole pipeline
# --------------------------------------------------------------------------------------------
def test_build_yolact_augmentation_from_config():
    cfg = _train_cfg(size=96)
    assert build_yolact_augmentation(cfg, is_train=False) == []
    augs = build_yolact_augmentation(cfg, is_train=True)
    assert [type(a) for a in augs] == [
        PhotometricDistort,
        Expand,
        RandomSampleCrop,
        T.RandomFlip,
        SquareResize,
    ]
    assert augs[0].image_format == "RGB"
    assert augs[1].fill == list(MEAN_RGB) and augs[1].max_ratio == 4.0
    assert augs[3].prob == 0.5 and augs[3].horizontal
    assert augs[4].size == 96
    for key in ("PHOTOMETRIC", "EXPAND", "RANDOM_SAMPLE_CROP", "MIRROR"):
        cfg.INPUT.YOLACT[key] = False
    assert [type(a) for a in build_yolact_augmentation(cfg, True)] == [SquareResize]


def test_training_augmentation_keeps_boxes_on_masks():
    """
    Rectangles (boxes == masks) and a crowd rectangle go through the full augmentation many
    times: the transformed, clipped box of every kept annotation must be the tight box of its
    transformed mask within 1 px, for the crowd box too.
    """
    np.random.seed(4)
    size = 64
    h, w = 48, 64
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    boxes = np.array([[4, 6, 30, 20], [20, 10, 60, 44], [40, 2, 52, 40], [2, 30, 24, 46]], float)
    is_crowd = np.array([False, False, False, True])
    masks = [_rect_mask(h, w, b) for b in boxes]
    augs = T.AugmentationList(build_yolact_augmentation(_train_cfg(size), is_train=True))
    crowd_seen = cropped_seen = 0
    for _ in range(200):
        aug_input = YolactAugInput(image, boxes=boxes.copy(), is_crowd=is_crowd)
        tfms = augs(aug_input)
        assert aug_input.image.shape == (size, size, 3) and aug_input.image.dtype == np.uint8
        kept = annotations_kept_by_crops(tfms, boxes)
        assert kept[~is_crowd].any()  # the crop always keeps a non-crowd centre
        cropped_seen += not kept.all()
        out_boxes = np.clip(aug_input.boxes, 0, size)
        for mask, out_box, keep, crowd in zip(masks, out_boxes, kept, is_crowd):
            if not keep:
                continue
            out_mask = tfms.apply_segmentation(mask)
            assert out_mask.shape == (size, size)
            if not out_mask.any():  # a sliver lost in the resize
                assert min(out_box[2] - out_box[0], out_box[3] - out_box[1]) < 1.5
                continue
            assert np.abs(_tight_box(out_mask) - out_box).max() <= 1.0
            crowd_seen += crowd
    assert crowd_seen > 50 and cropped_seen > 20
