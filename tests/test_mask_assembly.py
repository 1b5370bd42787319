# Copyright (c) yolact_d2 contributors.
import pytest
import torch

from yolact_d2.modeling.mask_assembly import assemble_masks, box_crop_bounds, crop_masks
from yolact_d2.modeling.paste import upsample_masks, upsample_masks_dense, upsample_masks_in_support


def test_assemble_masks_is_sigmoid_of_linear_combination():
    torch.manual_seed(0)
    protos = torch.rand(4, 5, 6)
    coeffs = torch.randn(3, 4)
    masks = assemble_masks(protos, coeffs)
    assert masks.shape == (3, 5, 6)
    for n in range(3):
        expected = torch.sigmoid(sum(coeffs[n, j] * protos[j] for j in range(4)))
        torch.testing.assert_close(masks[n], expected)


def test_crop_exact_pixels_with_reference_padding():
    masks = torch.ones(1, 10, 10)
    # x: 0.31*10 - 1 = 2.1 -> columns 3..; 0.58*10 + 1 = 6.8 -> columns < 6.8, i.e. 3..6
    # y: 0.0*10 - 1 -> clamp 0; 0.15*10 + 1 = 2.5 -> rows 0..2
    out = crop_masks(masks, torch.tensor([[0.31, 0.0, 0.58, 0.15]]))
    expected = torch.zeros(10, 10)
    expected[0:3, 3:7] = 1
    assert torch.equal(out[0], expected)


def test_crop_orders_swapped_coordinates_and_clamps():
    masks = torch.ones(1, 8, 8)
    out = crop_masks(masks, torch.tensor([[0.95, 1.2, 0.5, 0.5]]), padding=0)
    expected = torch.zeros(8, 8)
    expected[4:8, 4:8] = 1
    assert torch.equal(out[0], expected)


def test_crop_keeps_values_inside():
    masks = torch.rand(2, 6, 6)
    out = crop_masks(masks, torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]]), padding=0)
    assert torch.equal(out[0], masks[0])
    assert out[1].sum() == 0


def test_upsample_masks_stretches_and_thresholds():
    mask = torch.zeros(1, 4, 4)
    mask[0, :, :2] = 1.0  # left half
    out = upsample_masks(mask, (6, 10))
    assert out.dtype == torch.bool and out.shape == (1, 6, 10)
    assert out[0, :, :5].all() and not out[0, :, 5:].any()
    assert upsample_masks(torch.zeros(0, 4, 4), (3, 5)).shape == (0, 3, 5)


def _cropped_masks(n, size, seed, max_box=0.6):
    g = torch.Generator().manual_seed(seed)
    masks = assemble_masks(torch.rand(8, size, size, generator=g), torch.randn(n, 8, generator=g))
    corner = torch.rand(n, 2, generator=g) * 0.9
    boxes = torch.cat([corner, corner + torch.rand(n, 2, generator=g) * max_box], dim=1)
    return crop_masks(masks, boxes)


@pytest.mark.parametrize(
    "n,size,image_size",
    [(40, 138, (480, 640)), (7, 69, (427, 640)), (25, 138, (230, 352)), (5, 50, (901, 77))],
)
def test_upsample_in_support_is_bit_identical_to_dense(n, size, image_size):
    masks = _cropped_masks(n, size, seed=n)
    masks[0] = 0  # an empty mask
    for threshold in (0.5, 0.0, 0.93):
        dense = upsample_masks_dense(masks, image_size, threshold)
        assert torch.equal(upsample_masks_in_support(masks, image_size, threshold), dense)
        assert torch.equal(upsample_masks(masks, image_size, threshold), dense)


def test_upsample_in_support_without_crop_and_with_single_pixels():
    g = torch.Generator().manual_seed(3)
    uncropped = torch.rand(6, 30, 40, generator=g)
    assert torch.equal(
        upsample_masks_in_support(uncropped, (300, 250)),
        upsample_masks_dense(uncropped, (300, 250)),
    )
    dots = torch.zeros(4, 20, 20)
    dots[0, 0, 0] = dots[1, 19, 19] = dots[2, 10, 0] = dots[3, 0, 19] = 1.0
    for size in [(97, 203), (20, 20), (400, 33)]:
        assert torch.equal(upsample_masks_in_support(dots, size), upsample_masks_dense(dots, size))


def test_upsample_falls_back_where_the_support_path_is_not_exact():
    masks = _cropped_masks(3, 40, seed=5)
    small = upsample_masks(masks, (50, 60))  # H + W <= 128: PyTorch's vectorised kernel
    assert torch.equal(small, upsample_masks_dense(masks, (50, 60)))
    negative = upsample_masks(masks, (200, 300), threshold=-0.1)  # zeros count as foreground
    assert negative.all() and torch.equal(negative, upsample_masks_dense(masks, (200, 300), -0.1))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # 3 channels on one thread: the vectorised kernel again
        assert torch.equal(
            upsample_masks(masks, (200, 300)), upsample_masks_dense(masks, (200, 300))
        )
    finally:
        torch.set_num_threads(threads)


def test_crop_equals_product_with_the_2d_indicator():
    g = torch.Generator().manual_seed(9)
    masks = torch.rand(30, 40, 50, generator=g) * 2 - 1  # negative values too
    masks[0, 3, 4], masks[1, 5, 6] = float("nan"), float("inf")
    boxes = torch.rand(30, 4, generator=g) * 1.2 - 0.1
    x1, x2 = box_crop_bounds(boxes[:, 0], boxes[:, 2], 50, 1)
    y1, y2 = box_crop_bounds(boxes[:, 1], boxes[:, 3], 40, 1)
    cols, rows = torch.arange(50.0)[None], torch.arange(40.0)[None]
    inside_x = (cols >= x1[:, None]) & (cols < x2[:, None])
    inside_y = (rows >= y1[:, None]) & (rows < y2[:, None])
    expected = masks * (inside_y[:, :, None] & inside_x[:, None, :]).float()
    got = crop_masks(masks, boxes)
    assert torch.equal(got.isnan(), expected.isnan())
    same = ~expected.isnan()
    assert torch.equal(got[same], expected[same])
    assert torch.equal(got[same].signbit(), expected[same].signbit())
