# Copyright (c) yolact_d2 contributors.
"""
BoxLocalMasks (issue 12): full-image masks of huge images kept bit-packed around each mask,
exactly the masks the dense paste gives, usable where Detectron2 code uses pred_masks.
"""

import numpy as np

import torch

from detectron2.structures import Boxes

from yolact_d2.evaluation import instances_to_coco_results
from yolact_d2.modeling import BoxLocalMasks
from yolact_d2.modeling.mask_assembly import crop_masks
from yolact_d2.modeling.paste import paste_instances, upsample_masks_dense
from yolact_d2.modeling.postprocessing import PostprocessSettings


def _detections(n=6, size=(300, 500), seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 0.6
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 0.35 + 0.02], 1)
    masks = crop_masks(torch.rand(n, 138, 138, generator=g), boxes)
    masks[2] = 0  # one mask with nothing left
    pixel = boxes * torch.tensor([size[1], size[0], size[1], size[0]])
    return {
        "boxes": pixel.floor(),
        "scores": torch.linspace(0.9, 0.4, n),
        "classes": torch.arange(n) % 3,
        "masks": masks,
    }


def test_the_same_masks_as_the_dense_paste():
    size = (300, 500)
    detections = _detections(size=size)
    dense = upsample_masks_dense(detections["masks"], size, 0.5)
    local = BoxLocalMasks.from_soft_masks(detections["masks"], size, 0.5)
    assert local.shape == dense.shape and len(local) == 6
    assert torch.equal(local.tensor, dense)
    assert np.array_equal(np.asarray(local), dense.numpy())
    assert all(torch.equal(a, b) for a, b in zip(local, dense))
    assert torch.equal(local[3], dense[3]) and not local[2].any()
    assert torch.equal(local.area(), dense.flatten(1).sum(dim=1))
    keep = torch.tensor([True, False, True, True, False, True])
    assert torch.equal(local[keep].tensor, dense[keep])
    assert torch.equal(local[torch.tensor([5, 0])].tensor, dense[[5, 0]])
    assert torch.equal(local[1:4].tensor, dense[1:4])
    assert local.nbytes < dense.numel() / 8 + 100  # bits, and only around each mask
    assert local.to("cpu") is local


def test_instances_switch_to_box_local_masks_above_the_budget():
    size = (300, 500)
    detections = _detections(size=size)
    dense = paste_instances(detections, size, PostprocessSettings())
    assert isinstance(dense.pred_masks, torch.Tensor)
    local = paste_instances(detections, size, PostprocessSettings(max_dense_mask_bytes=1000))
    assert isinstance(local.pred_masks, BoxLocalMasks)
    assert torch.equal(local.pred_masks.tensor, dense.pred_masks)
    shown = local[local.scores > 0.6]  # Instances indexing reaches the masks
    assert isinstance(shown.pred_masks, BoxLocalMasks) and len(shown) == len(shown.pred_masks)
    assert torch.equal(shown.pred_masks.tensor, dense[dense.scores > 0.6].pred_masks)
    assert torch.equal(local[2].pred_masks.tensor, dense[2].pred_masks)
    # Detectron2's COCO json writer, through our results helper, gives the same RLEs
    a = instances_to_coco_results(local, 1)
    b = instances_to_coco_results(dense, 1)
    assert [r["segmentation"] for r in a] == [r["segmentation"] for r in b]
    assert isinstance(local.pred_boxes, Boxes)
