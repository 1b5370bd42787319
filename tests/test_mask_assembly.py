# Copyright (c) yolact_d2 contributors.
import torch

from yolact_d2.modeling.mask_assembly import assemble_masks, crop_masks, upsample_masks


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
