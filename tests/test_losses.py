# Copyright (c) yolact_d2 contributors.
import math

import pytest
import torch

from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from yolact_d2.modeling.box_coder import encode_boxes
from yolact_d2.modeling.losses import (
    box_loss,
    downsample_gt_masks,
    mask_iou_loss,
    mask_loss_one_image,
    ohem_class_loss,
    semantic_seg_loss,
)
from yolact_d2.modeling.matching import match_priors

from common import get_model


def cs(x1, y1, x2, y2):
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def test_matching_thresholds_forced_match_and_crowds():
    priors = torch.tensor(
        [
            cs(0.0, 0.0, 0.2, 0.2),  # 0: IoU 1 with gt0 -> positive
            cs(0.0, 0.0, 0.2, 0.3),  # 1: IoU 0.667 with gt0 -> positive
            cs(0.0, 0.0, 0.2, 0.45),  # 2: IoU 0.444 with gt0 -> ignored
            cs(0.6, 0.6, 0.7, 0.7),  # 3: far from gt0; IoU 0.25 with gt1 -> would be background
            cs(0.9, 0.0, 1.0, 0.1),  # 4: background, inside the crowd
            cs(0.9, 0.5, 1.0, 0.6),  # 5: background
        ]
    )
    gt = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.55, 0.55, 0.75, 0.75]])
    crowd = torch.tensor([[0.85, 0.0, 1.0, 0.12]])
    labels, matched = match_priors(gt, torch.tensor([4, 7]), crowd, priors)
    # gt1's best prior (3, IoU 0.25) is forced positive although below 0.4.
    assert labels.tolist() == [5, 5, -1, 8, -1, 0]
    assert matched[:4].tolist() == [0, 0, 0, 1]


def test_matching_without_ground_truth_is_all_background():
    priors = torch.tensor([cs(0, 0, 0.5, 0.5), cs(0.5, 0.5, 1, 1)])
    labels, _ = match_priors(
        torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), priors
    )
    assert labels.tolist() == [0, 0]


def test_ohem_picks_hardest_negatives_at_three_to_one():
    torch.manual_seed(0)
    logits = torch.randn(1, 10, 3)
    labels = torch.tensor([[2, 0, 0, 0, 0, -1, 0, 0, 0, 0]])
    got = ohem_class_loss(logits, labels, 3)
    # Independent computation: -log softmax(bg) for each background prior, take the 3 largest.
    log_p = torch.log_softmax(logits[0], dim=1)
    bg = [(-log_p[i, 0].item(), i) for i in range(10) if labels[0, i] == 0]
    hardest = [i for _, i in sorted(bg, reverse=True)[:3]]
    expected = -log_p[0, 2] - sum(log_p[i, 0] for i in hardest)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_ohem_caps_negatives_at_num_priors_minus_one():
    logits = torch.zeros(1, 4, 2)
    labels = torch.tensor([[1, 0, 0, 0]])
    # 3 * 1 = 3 negatives requested, 3 available: all used; each CE = log 2.
    assert ohem_class_loss(logits, labels, 3).item() == pytest.approx(4 * math.log(2))
    labels = torch.tensor([[0, 0, 0, 0]])  # no positive -> no negative either
    assert ohem_class_loss(logits, labels, 3).item() == 0


def test_mask_loss_matches_explicit_loops():
    torch.manual_seed(0)
    protos = torch.rand(3, 6, 6)
    coeffs = torch.randn(2, 3)
    gt_masks = (torch.rand(2, 6, 6) > 0.5).float()
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.2, 0.3, 0.9, 0.7]])
    got = mask_loss_one_image(protos, coeffs, gt_masks, boxes, max_masks=100)["loss"]
    expected = 0.0
    for n in range(2):
        x1, x2 = max(boxes[n, 0] * 6 - 1, 0), min(boxes[n, 2] * 6 + 1, 6)
        y1, y2 = max(boxes[n, 1] * 6 - 1, 0), min(boxes[n, 3] * 6 + 1, 6)
        total = 0.0
        for y in range(6):
            for x in range(6):
                inside = x1 <= x < x2 and y1 <= y < y2
                p = torch.sigmoid((coeffs[n] * protos[:, y, x]).sum()).item() if inside else 0.0
                t = gt_masks[n, y, x].item()
                log_p = max(math.log(p), -100) if p > 0 else -100
                log_q = max(math.log(1 - p), -100) if p < 1 else -100
                total += -(t * log_p + (1 - t) * log_q)
        area = (boxes[n, 2] - boxes[n, 0]) * 6 * (boxes[n, 3] - boxes[n, 1]) * 6
        expected += total / area.item()
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_mask_loss_subsampling_rescales():
    torch.manual_seed(0)
    protos = torch.rand(3, 4, 4)
    coeffs = torch.zeros(5, 3)  # every mask 0.5 -> identical per-instance losses
    gt = torch.zeros(5, 4, 4)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(5, 1)
    full = mask_loss_one_image(protos, coeffs, gt, boxes, max_masks=100)
    sub = mask_loss_one_image(protos, coeffs, gt, boxes, max_masks=2)
    assert len(sub["selected"]) == 2
    assert sub["loss"].item() == pytest.approx(full["loss"].item(), rel=1e-6)


def test_semantic_seg_loss_explicit():
    logits = torch.zeros(1, 2, 2, 2)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True  # class 1, top-left cell
    masks[1, 2:, 2:] = True  # class 1, bottom-right cell
    got = semantic_seg_loss(logits, [masks], [torch.tensor([1, 1])])
    # All logits 0: BCE = log 2 per element, 8 elements, divided by 2*2.
    assert got.item() == pytest.approx(8 * math.log(2) / 4)
    logits[0, 1, 0, 0] = 10.0
    logits[0, 1, 1, 1] = 10.0
    got = semantic_seg_loss(logits, [masks], [torch.tensor([1, 1])])
    expected = (6 * math.log(2) + 2 * math.log1p(math.exp(-10))) / 4
    assert got.item() == pytest.approx(expected, rel=1e-5)


def _toy_instances(size):
    inst = Instances((size, size))
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    masks[0, 10:60, 20:90] = True
    masks[1, 70:120, 70:110] = True
    inst.gt_masks = BitMasks(masks)
    inst.gt_boxes = Boxes(torch.tensor([[20.0, 10, 90, 60], [70.0, 70, 110, 120]]))
    inst.gt_classes = torch.tensor([3, 5])
    return inst


def test_yolact_loss_normalisation_against_components():
    size = 128
    model = get_model("yolact_R_50_FPN_550.yaml", ["MODEL.YOLACT.INPUT_SIZE", str(size)])
    torch.manual_seed(0)
    with torch.no_grad():
        outputs = model.predict(torch.randn(2, 3, size, size))
    gts = [_toy_instances(size), _toy_instances(size)]
    crowds = [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 30.0, 30.0]])]
    loss_fn = model.loss
    with EventStorage():
        losses, maskiou_inputs = loss_fn(outputs, gts, crowds)
        logits = model.mask_branch.semantic_seg_logits(outputs["features"])
        losses["loss_semantic_seg"] = loss_fn.semantic_seg(logits, gts)
    assert set(losses) == {"loss_cls", "loss_box", "loss_mask", "loss_semantic_seg"}
    assert maskiou_inputs == {}  # YOLACT v1
    labels = torch.stack(
        [
            match_priors(g.gt_boxes.tensor / size, g.gt_classes, c / size, outputs["priors"])[0]
            for g, c in zip(gts, crowds)
        ]
    )
    num_pos = int((labels > 0).sum())
    assert num_pos > 0
    expected_cls = ohem_class_loss(outputs["class_logits"], labels, 3) / num_pos
    assert losses["loss_cls"].item() == pytest.approx(expected_cls.item(), rel=1e-5)

    # Box, mask and semantic losses from their (separately tested) parts, with the reference's
    # weights (1.5, 6.125, 1) and normalisers (positives of the batch; batch size).
    priors, protos = outputs["priors"], outputs["prototypes"]
    box_sum, mask_sum = 0.0, 0.0
    for i, (g, c) in enumerate(zip(gts, crowds)):
        image_labels, matched = match_priors(
            g.gt_boxes.tensor / size, g.gt_classes, c / size, priors
        )
        pos = image_labels > 0
        assert 0 < int(pos.sum()) <= 100  # no random subsampling of the masks
        gt_boxes = g.gt_boxes.tensor[matched[pos]] / size
        targets = encode_boxes(gt_boxes, priors[pos], (0.1, 0.2))
        box_sum += box_loss(outputs["box_deltas"][i][pos], targets).item()
        gt_masks = downsample_gt_masks(g.gt_masks.tensor, protos.shape[-2:])[matched[pos]]
        mask_sum += mask_loss_one_image(
            protos[i], outputs["coefficients"][i][pos], gt_masks, gt_boxes, 100
        )["loss"].item()
    assert losses["loss_box"].item() == pytest.approx(1.5 * box_sum / num_pos, rel=1e-5)
    assert losses["loss_mask"].item() == pytest.approx(6.125 * mask_sum / num_pos, rel=1e-5)
    with torch.no_grad():
        seg_logits = model.mask_branch.semantic_seg_conv(outputs["features"]["p3"])
    seg = semantic_seg_loss(
        seg_logits, [g.gt_masks.tensor for g in gts], [g.gt_classes for g in gts]
    )
    assert losses["loss_semantic_seg"].item() == pytest.approx(seg.item() / 2, rel=1e-5)


def test_training_forward_backward_with_plus_model():
    size = 256  # the mask-IoU net needs prototypes of at least 63 pixels
    model = get_model(
        "yolact_plus_R_50_FPN_550.yaml",
        ["MODEL.YOLACT.INPUT_SIZE", str(size), "MODEL.YOLACT.LOSS.DISCARD_MASK_AREA", "0"],
    )
    model.train()
    batch = [
        {
            "image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8),
            "instances": _toy_instances(size),
        },
        {
            "image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8),
            "instances": _toy_instances(size)[:0],  # no ground truth at all
            "crowd_boxes": torch.tensor([[0.0, 0.0, 50.0, 50.0]]),
        },
    ]
    with EventStorage():
        losses = model(batch)
    assert {"loss_cls", "loss_box", "loss_mask", "loss_semantic_seg", "loss_maskiou"} == set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.head.coefficients.weight.grad.abs().sum() > 0
    assert model.mask_branch.maskiou_net.net[0].weight.grad.abs().sum() > 0
    assert model.mask_branch.semantic_seg_conv.weight.grad.abs().sum() > 0


def test_maskiou_without_large_enough_masks_still_reaches_every_parameter():
    """No mask above DISCARD_MASK_AREA: loss_maskiou is 0 and every mask-IoU parameter gets a
    zero gradient (DistributedDataParallel needs all of them used in every step)."""
    size = 256
    model = get_model(
        "yolact_plus_R_50_FPN_550.yaml",
        ["MODEL.YOLACT.INPUT_SIZE", str(size), "MODEL.YOLACT.LOSS.DISCARD_MASK_AREA", "1000000000"],
    ).train()
    batch = [
        {
            "image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8),
            "instances": _toy_instances(size),
        }
    ]
    with EventStorage():
        losses = model(batch)
    assert losses["loss_maskiou"].item() == 0
    sum(losses.values()).backward()
    grads = [p.grad for p in model.mask_branch.maskiou_net.parameters()]
    assert all(g is not None and not g.any() for g in grads)
    assert model.mask_branch.protonet.predictor.weight.grad.abs().sum() > 0


def test_mask_iou_loss_explicit():
    predicted = torch.tensor([[0.1, 0.8, 0.3], [0.5, 0.2, 0.9]])
    targets = torch.tensor([0.6, 0.2])
    classes = torch.tensor([1, 2])
    # smooth-L1 (beta 1, quadratic below 1) of 0.8 - 0.6 and 0.9 - 0.2: 0.5 * (0.04 + 0.49)
    assert mask_iou_loss(predicted, targets, classes).item() == pytest.approx(0.265)
    empty = mask_iou_loss(torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0
