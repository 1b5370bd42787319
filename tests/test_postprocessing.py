# Copyright (c) yolact_d2 contributors.
import torch

from yolact_d2.layers import build_nms, fast_nms
from yolact_d2.modeling.postprocessing import _gather_columns, select_candidates, suppress


def test_gathering_candidate_scores_along_memory_is_exact():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(500, 9, generator=g), dim=1)
    scores = probs[:, 1:].t()  # the transposed view select_candidates returns
    columns = torch.tensor([3, 0, 499, 17, 17, 250])
    gathered = _gather_columns(scores, columns)
    assert gathered.is_contiguous() and torch.equal(gathered, scores[:, columns])
    contiguous = scores.contiguous()
    assert torch.equal(_gather_columns(contiguous, columns), contiguous[:, columns])


def test_suppress_is_fast_nms_on_the_candidates_of_the_pre_filter():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(400, 6, generator=g) * 3
    corner = torch.rand(400, 2, generator=g) * 0.7
    boxes = torch.cat([corner, corner + torch.rand(400, 2, generator=g) * 0.3], dim=1)
    scores, candidates = select_candidates(logits, 0.2)
    probs = torch.softmax(logits, dim=1)[:, 1:]
    assert torch.equal(candidates, (probs.max(dim=1).values > 0.2).nonzero().flatten())
    expected_scores, classes, order = fast_nms(
        boxes[candidates], probs[candidates].t(), 0.5, 50, 30
    )
    nms = build_nms("fast", iou_threshold=0.5, top_k=50, max_num_detections=30)
    got = suppress(boxes, scores, candidates, nms)
    assert len(got["scores"]) > 5
    assert torch.equal(got["scores"], expected_scores) and torch.equal(got["classes"], classes)
    assert torch.equal(got["indices"], candidates[order])
