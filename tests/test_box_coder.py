# Copyright (c) yolact_d2 contributors.
import math

import torch

from yolact_d2.modeling.box_coder import decode_boxes, encode_boxes


def test_decode_exact_values():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    deltas = torch.tensor([[1.0, -2.0, 0.0, 5.0]])
    boxes = decode_boxes(deltas, priors)
    cx = 0.5 + 1.0 * 0.1 * 0.2
    cy = 0.5 - 2.0 * 0.1 * 0.4
    w = 0.2
    h = 0.4 * math.exp(5.0 * 0.2)
    expected = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
    torch.testing.assert_close(boxes, expected)


def test_decode_does_not_clamp_large_sizes():
    # Detectron2's Box2BoxTransform would clamp dw at log(1000/16); the reference does not.
    priors = torch.tensor([[0.5, 0.5, 0.1, 0.1]])
    boxes = decode_boxes(torch.tensor([[0.0, 0.0, 30.0, 0.0]]), priors)
    assert (boxes[0, 2] - boxes[0, 0]).item() == torch.tensor(0.1 * math.exp(6.0)).item()


def test_decode_batched_matches_single():
    priors = torch.rand(7, 4) * 0.5 + 0.1
    deltas = torch.randn(3, 7, 4)
    batched = decode_boxes(deltas, priors)
    for i in range(3):
        assert torch.equal(batched[i], decode_boxes(deltas[i], priors))


def test_encode_inverts_decode():
    torch.manual_seed(0)
    priors = torch.rand(50, 4) * 0.5 + 0.1
    deltas = torch.randn(50, 4)
    boxes = decode_boxes(deltas, priors)
    torch.testing.assert_close(encode_boxes(boxes, priors), deltas, atol=1e-4, rtol=1e-4)


def test_encode_exact_values():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    box = torch.tensor([[0.4, 0.5, 0.8, 0.9]])
    expected = torch.tensor(
        [
            [
                (0.6 - 0.5) / (0.1 * 0.2),
                (0.7 - 0.5) / (0.1 * 0.2),
                math.log(2) / 0.2,
                math.log(2) / 0.2,
            ]
        ]
    )
    torch.testing.assert_close(encode_boxes(box, priors), expected)


def test_box_ops_are_bit_identical_to_the_reference_formulas():
    """torchvision's ops (used for the 2-D cases) against the reference's jaccard/point_form."""
    from yolact_d2.layers import box_iou, center_size_to_corners

    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        centre_size = torch.rand(400, 4, dtype=dtype) * torch.tensor([1, 1, 0.5, 0.5], dtype=dtype)
        corners = center_size_to_corners(centre_size)
        # point_form: (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        half = centre_size[:, 2:] / 2
        expected = torch.cat((centre_size[:, :2] - half, centre_size[:, :2] + half), dim=1)
        assert torch.equal(corners, expected)
        a, b = corners[:250], corners[250:]
        # jaccard: intersection / (area_a + area_b - intersection), with clamped overlaps
        lt = torch.max(a[:, None, :2], b[None, :, :2])
        rb = torch.min(a[:, None, 2:], b[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=2)
        area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
        expected_iou = inter / (area(a)[:, None] + area(b)[None, :] - inter)
        assert torch.equal(box_iou(a, b), expected_iou)
        # the batched form (Fast NMS) agrees with the 2-D one, class by class
        batched = box_iou(corners[None, :200].repeat(3, 1, 1), corners[None, 200:].repeat(3, 1, 1))
        assert all(torch.equal(batched[c], box_iou(corners[:200], corners[200:])) for c in range(3))
