# Copyright (c) yolact_d2 contributors.
"""
Property-based tests (hypothesis) of the NMS flavours, box coding, crop and mask assembly, and
the augmentation geometry: invariants that must hold for any input, including empty,
degenerate and inverted boxes.
"""

import numpy as np

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectron2.data import transforms as T

from yolact_d2.data.augmentation import Expand, RandomSampleCrop, SquareResize, YolactAugInput
from yolact_d2.layers import batched_nms, box_iou, cross_class_fast_nms, fast_nms, traditional_nms
from yolact_d2.modeling.box_coder import decode_boxes, encode_boxes
from yolact_d2.modeling.mask_assembly import assemble_masks, box_crop_bounds, crop_masks

# Derandomised (the same examples every run, so CI is reproducible) and without an example
# database on disk; raise max_examples locally to search harder.
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def candidates(draw, max_n=40, max_c=4, degenerate=False):
    """(boxes (n, 4) relative XYXY, scores (C, n) distinct) from a hypothesis seed."""
    n = draw(st.integers(0, max_n))
    c = draw(st.integers(1, max_c))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    xy = rng.random((n, 2)) * 0.8
    wh = rng.random((n, 2)) * 0.4 + (0.0 if degenerate else 0.01)
    boxes = np.concatenate([xy, xy + wh], 1)
    if degenerate and n:  # zero-area and inverted boxes among them
        flat = rng.random(n) < 0.3
        boxes[flat, 2:] = boxes[flat, :2]
        flip = rng.random(n) < 0.3
        boxes[flip] = boxes[flip][:, [2, 3, 0, 1]]
    scores = rng.permutation(c * n).reshape(c, n) / max(c * n, 1) + 0.01
    return torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32)


def _kept_triples(result):
    scores, classes, indices = result
    return {(int(c), int(i)) for c, i in zip(classes, indices)}


@SETTINGS
@given(candidates(), st.floats(0.1, 0.9), st.integers(1, 50))
def test_fast_nms_invariants(case, threshold, top_k):
    boxes, scores = case
    kept_scores, classes, indices = fast_nms(boxes, scores, threshold, top_k, 1000)
    num_classes, n = scores.shape
    # a subset of the candidates, each (class, index) once, best first, with its own score
    assert len(_kept_triples((kept_scores, classes, indices))) == len(indices)
    assert ((indices >= 0) & (indices < max(n, 1))).all() and (classes < num_classes).all()
    assert torch.equal(kept_scores, scores[classes, indices])
    assert (kept_scores[:-1] >= kept_scores[1:]).all()
    # each kept box is among its class's top_k and overlaps no higher-ranked top_k box above
    # the threshold (Fast NMS: suppressed boxes still suppress)
    for c, i in zip(classes.tolist(), indices.tolist()):
        ranked = torch.argsort(scores[c], descending=True, stable=True)[:top_k]
        position = (ranked == i).nonzero()
        assert len(position) == 1
        higher = ranked[: int(position)]
        if len(higher):
            assert box_iou(boxes[i][None], boxes[higher]).max() <= threshold
    # what Fast NMS keeps, greedy NMS on the same candidates keeps too (without the cap)
    greedy = batched_nms(boxes, scores, threshold, top_k, 100000)
    assert _kept_triples((kept_scores, classes, indices)) <= _kept_triples(greedy)


@SETTINGS
@given(candidates(), st.floats(0.1, 0.9))
def test_fast_nms_is_invariant_to_the_order_of_candidates(case, threshold):
    boxes, scores = case
    n = boxes.shape[0]
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    expected = fast_nms(boxes, scores, threshold, 200, 1000)
    got = fast_nms(boxes[permutation], scores[:, permutation], threshold, 200, 1000)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert torch.equal(permutation[got[2]], expected[2])  # distinct scores: no ties


def _iou_plus_one(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(w, 0) * max(h, 0)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@SETTINGS
@given(candidates(max_n=30), st.floats(0.1, 0.9))
def test_traditional_nms_leaves_no_overlapping_pair_of_a_class(case, threshold):
    boxes, scores = case
    _, classes, indices = traditional_nms(boxes, scores, threshold, 200, 1000, 0.05, 550)
    pixels = (boxes * 550).tolist()
    for c in set(classes.tolist()):
        kept = indices[classes == c].tolist()
        for a in range(len(kept)):
            for b in range(a + 1, len(kept)):
                assert _iou_plus_one(pixels[kept[a]], pixels[kept[b]]) < threshold


@SETTINGS
@given(candidates(), st.floats(0.1, 0.9))
def test_cross_class_nms_keeps_no_pair_above_the_threshold(case, threshold):
    boxes, scores = case
    _, _, indices = cross_class_fast_nms(boxes, scores, threshold, 200)
    if len(indices) > 1:
        iou = box_iou(boxes[indices], boxes[indices]).triu(diagonal=1)
        assert iou.max() <= threshold


@SETTINGS
@given(candidates(degenerate=True), st.floats(0.1, 0.9))
def test_every_nms_copes_with_degenerate_and_inverted_boxes(case, threshold):
    boxes, scores = case
    n = boxes.shape[0]
    for result in (
        fast_nms(boxes, scores, threshold),
        cross_class_fast_nms(boxes, scores, threshold),
        traditional_nms(boxes, scores, threshold),
        batched_nms(boxes, scores, threshold),
    ):
        kept_scores, classes, indices = result
        assert len(kept_scores) == len(classes) == len(indices) <= max(n, 0) * scores.shape[0]
        assert torch.isfinite(kept_scores).all()
        assert ((indices >= 0) & (indices < max(n, 1))).all()


def test_every_nms_on_no_candidates():
    boxes, scores = torch.zeros((0, 4)), torch.zeros((3, 0))
    for nms in (fast_nms, cross_class_fast_nms, traditional_nms, batched_nms):
        assert all(len(t) == 0 for t in nms(boxes, scores))


@SETTINGS
@given(st.integers(1, 50), st.integers(0, 2**31))
def test_decode_inverts_encode(n, seed):
    rng = np.random.default_rng(seed)
    priors = torch.tensor(np.concatenate([rng.random((n, 2)), rng.random((n, 2)) * 0.5 + 0.01], 1))
    xy = rng.random((n, 2))
    boxes = torch.tensor(np.concatenate([xy, xy + rng.random((n, 2)) * 0.5 + 0.01], 1))
    decoded = decode_boxes(encode_boxes(boxes, priors), priors)
    torch.testing.assert_close(decoded, boxes, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**31))
def test_crop_keeps_exactly_the_box_and_assembly_is_a_sigmoid(n, h, w, seed):
    rng = np.random.default_rng(seed)
    k = 4
    prototypes = torch.tensor(rng.random((k, h, w)), dtype=torch.float32)
    coefficients = torch.tensor(rng.uniform(-1, 1, (n, k)), dtype=torch.float32)
    masks = assemble_masks(prototypes, coefficients)
    expected = torch.sigmoid(torch.einsum("nk,khw->nhw", coefficients, prototypes))
    torch.testing.assert_close(masks, expected)
    assert ((masks > 0) & (masks < 1)).all()
    boxes = torch.tensor(rng.uniform(-0.2, 1.2, (n, 4)), dtype=torch.float32)  # any order
    cropped = crop_masks(masks, boxes)
    x1, x2 = box_crop_bounds(boxes[:, 0], boxes[:, 2], w, 1)
    y1, y2 = box_crop_bounds(boxes[:, 1], boxes[:, 3], h, 1)
    for i in range(n):
        cols = torch.arange(w, dtype=torch.float32)
        rows = torch.arange(h, dtype=torch.float32)
        inside = ((rows >= y1[i]) & (rows < y2[i]))[:, None] & ((cols >= x1[i]) & (cols < x2[i]))
        assert torch.equal(cropped[i][inside], masks[i][inside])
        assert (cropped[i][~inside] == 0).all()


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.integers(0, 2**31), st.integers(24, 90), st.integers(24, 90))
def test_masks_stay_inside_their_boxes_through_the_augmentations(seed, height, width):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
    x1, y1 = int(rng.integers(x0 + 4, width + 1)), int(rng.integers(y0 + 4, height + 1))
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = 1
    box = np.array([[x0, y0, x1, y1]], dtype=np.float32)
    np.random.seed(seed % 2**32)  # Detectron2's augmentations draw from numpy's global state
    augmentations = T.AugmentationList(
        [
            Expand(fill=[0, 0, 0], max_ratio=3.0, prob=0.7),
            RandomSampleCrop(),
            T.RandomFlip(prob=0.5, horizontal=True, vertical=False),
            SquareResize(64),
        ]
    )
    aug_input = YolactAugInput(image, boxes=box)
    transforms = augmentations(aug_input)
    out_mask = transforms.apply_segmentation(mask)
    bx0, by0, bx1, by1 = aug_input.boxes[0]
    assert aug_input.image.shape[:2] == (64, 64) and out_mask.shape == (64, 64)
    ys, xs = np.nonzero(out_mask)
    # the box centre is always inside a crop, so some of the mask survives; every surviving
    # pixel (its centre) lies inside the transformed box, up to the resize's rounding
    assert len(xs) > 0
    assert (xs + 0.5 >= bx0 - 1).all() and (xs + 0.5 <= bx1 + 1).all()
    assert (ys + 0.5 >= by0 - 1).all() and (ys + 0.5 <= by1 + 1).all()
