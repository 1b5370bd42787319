# Copyright (c) yolact_d2 contributors.
import pytest
import torch
import torchvision

from yolact_d2.layers import (
    batched_nms,
    box_iou,
    build_nms,
    cross_class_fast_nms,
    fast_nms,
    fast_nms_traceable,
    max_iou_with_higher_scored,
    sorted_top_k,
    stable_top_k_traceable,
    traditional_nms,
)


def random_candidates(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 0.8
    wh = torch.rand(n, 2, generator=g) * 0.3 + 0.02
    boxes = torch.cat([xy, xy + wh], dim=1)
    # Distinct scores so that orderings are unambiguous.
    scores = torch.randperm(c * n, generator=g).float().view(c, n) / (c * n)
    return boxes, scores


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def brute_force_fast_nms(boxes, scores, thresh, top_k, max_det):
    """Fast NMS spelled out with loops: suppressed boxes still suppress."""
    kept = []
    b = boxes.tolist()
    for c in range(scores.shape[0]):
        order = sorted(range(scores.shape[1]), key=lambda i: -scores[c, i].item())[:top_k]
        for pos, i in enumerate(order):
            worst = max([iou(b[i], b[j]) for j in order[:pos]], default=0.0)
            if worst <= thresh:
                kept.append((scores[c, i].item(), c, i))
    kept.sort(key=lambda t: -t[0])
    return kept[:max_det]


def brute_force_greedy(boxes, scores, thresh, score_thresh, size, max_det):
    kept = []
    b = (boxes * size).tolist()

    def iou_plus_one(a, r):
        iw = max(0.0, min(a[2], r[2]) - max(a[0], r[0]) + 1)
        ih = max(0.0, min(a[3], r[3]) - max(a[1], r[1]) + 1)
        area = lambda q: (q[2] - q[0] + 1) * (q[3] - q[1] + 1)  # noqa: E731
        return iw * ih / (area(a) + area(r) - iw * ih)

    for c in range(scores.shape[0]):
        order = [i for i in range(scores.shape[1]) if scores[c, i] > score_thresh]
        order.sort(key=lambda i: -scores[c, i].item())
        chosen = []
        for i in order:
            if all(iou_plus_one(b[i], b[j]) < thresh for j in chosen):
                chosen.append(i)
        kept += [(scores[c, i].item(), c, i) for i in chosen]
    kept.sort(key=lambda t: -t[0])
    return kept[:max_det]


def as_tuples(result):
    scores, classes, idx = result
    return [(s, int(c), int(i)) for s, c, i in zip(scores.tolist(), classes, idx)]


@pytest.mark.parametrize("seed", range(5))
def test_fast_nms_matches_brute_force(seed):
    boxes, scores = random_candidates(60, 4, seed)
    got = as_tuples(fast_nms(boxes, scores, 0.5, top_k=25, max_num_detections=30))
    assert got == brute_force_fast_nms(boxes, scores, 0.5, 25, 30)


def test_fast_nms_differs_from_greedy_when_a_suppressed_box_suppresses():
    # A > B > C in score; IoU(A,B) > t, IoU(B,C) > t, IoU(A,C) < t.
    boxes = torch.tensor([[0.0, 0, 1, 1], [0.3, 0, 1.3, 1], [0.6, 0, 1.6, 1]])
    scores = torch.tensor([[0.9, 0.8, 0.7]])
    _, _, idx = fast_nms(boxes, scores, 0.4, 200, 100)
    assert idx.tolist() == [0]  # greedy NMS would keep box 2 as well
    _, _, idx = traditional_nms(boxes, scores, 0.4, input_size=100)
    assert sorted(idx.tolist()) == [0, 2]


def test_fast_nms_keeps_iou_equal_to_threshold_and_has_no_second_threshold():
    boxes = torch.tensor([[0.0, 0, 2, 1], [1.0, 0, 3, 1]])  # IoU = 1/3
    scores = torch.tensor([[0.9, 0.001]])
    s, c, i = fast_nms(boxes, scores, 1 / 3, 200, 100)
    assert i.tolist() == [0, 1] and s[1].item() == pytest.approx(0.001)


def test_fast_nms_empty_and_op_registration():
    s, c, i = fast_nms(torch.zeros(0, 4), torch.zeros(80, 0), 0.5, 200, 100)
    assert s.shape == c.shape == i.shape == (0,)
    boxes, scores = random_candidates(30, 3, 0)
    torch.library.opcheck(torch.ops.yolact_d2.fast_nms.default, (boxes, scores, 0.5, 10, 20))


def test_fast_nms_exports():
    class Wrapper(torch.nn.Module):
        def forward(self, boxes, scores):
            return torch.ops.yolact_d2.fast_nms(boxes, scores, 0.5, 10, 20)

    boxes, scores = random_candidates(30, 3, 1)
    exported = torch.export.export(Wrapper(), (boxes, scores))
    out = exported.module()(boxes, scores)
    ref = fast_nms(boxes, scores, 0.5, 10, 20)
    for a, b in zip(out, ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("seed", range(3))
def test_cross_class_matches_brute_force(seed):
    boxes, scores = random_candidates(50, 3, seed)
    best, cls = scores.max(0)
    order = sorted(range(50), key=lambda i: -best[i].item())[:20]
    b = boxes.tolist()
    expected = [
        (best[i].item(), int(cls[i]), i)
        for pos, i in enumerate(order)
        if max([iou(b[i], b[j]) for j in order[:pos]], default=0.0) <= 0.5
    ]
    assert as_tuples(cross_class_fast_nms(boxes, scores, 0.5, top_k=20)) == expected


@pytest.mark.parametrize("seed", range(3))
def test_traditional_matches_brute_force(seed):
    boxes, scores = random_candidates(40, 3, seed)
    got = as_tuples(traditional_nms(boxes, scores, 0.5, max_num_detections=25, score_threshold=0.3))
    assert got == brute_force_greedy(boxes, scores, 0.5, 0.3, 550, 25)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fast_nms_cuda_matches_cpu():
    boxes, scores = random_candidates(200, 10, 3)
    cpu = fast_nms(boxes, scores, 0.5, 100, 100)
    gpu = fast_nms(boxes.cuda(), scores.cuda(), 0.5, 100, 100)
    for a, b in zip(cpu, gpu):
        assert torch.equal(a, b.cpu())


def straightforward_fast_nms(boxes, scores, thresh, top_k, max_det):
    """Fast NMS as first written: full stable sort per class, full IoU matrix, triu, column max."""
    scores, order = scores.sort(dim=1, descending=True, stable=True)
    order, scores = order[:, :top_k], scores[:, :top_k]
    class_boxes = boxes[order]
    keep = box_iou(class_boxes, class_boxes).triu_(diagonal=1).max(dim=1).values <= thresh
    classes = torch.arange(scores.shape[0])[:, None].expand_as(keep)
    kept_scores, rank = scores[keep].sort(dim=0, descending=True)
    return kept_scores[:max_det], classes[keep][rank[:max_det]], order[keep][rank[:max_det]]


def tied_candidates(n, c, levels, seed):
    """Candidates whose scores take only ``levels`` values, so that most of them tie."""
    boxes, _ = random_candidates(n, c, seed)
    g = torch.Generator().manual_seed(seed)
    return boxes, torch.randint(0, levels, (c, n), generator=g).float() / levels


@pytest.mark.parametrize("levels", [3, 40, 10**6])
def test_sorted_top_k_is_a_stable_descending_sort(levels):
    _, scores = tied_candidates(500, 6, levels, seed=levels)
    ref_values, ref_indices = scores.sort(dim=1, descending=True, stable=True)
    for k in (0, 1, 37, 200, 499, 500, 800):
        values, indices = sorted_top_k(scores, k)
        assert torch.equal(values, ref_values[:, :k]) and torch.equal(indices, ref_indices[:, :k])
        if 1 <= k <= 500:
            values, indices = stable_top_k_traceable(scores, k)
            assert torch.equal(values, ref_values[:, :k])
            assert torch.equal(indices, ref_indices[:, :k]), k
    scores[1, 7] = float("nan")
    values, indices = sorted_top_k(scores, 20)
    ref_values, ref_indices = scores.sort(dim=1, descending=True, stable=True)
    assert torch.equal(indices, ref_indices[:, :20])
    # the exporters' version ranks NaN as -inf (last), never first
    as_minus_inf = torch.where(scores.isnan(), -float("inf"), scores)
    ref_values, ref_indices = as_minus_inf.sort(dim=1, descending=True, stable=True)
    values, indices = stable_top_k_traceable(scores, 500)
    assert torch.equal(indices, ref_indices) and values[1, -1] == -float("inf")


def test_max_iou_with_higher_scored_is_exact():
    boxes, _ = random_candidates(200, 1, 4)
    orders = [torch.randperm(200, generator=torch.Generator().manual_seed(i)) for i in range(19)]
    class_boxes = torch.stack([boxes[order] for order in orders])
    class_boxes[3, 5] = class_boxes[3, 2]  # identical boxes: IoU exactly 1
    expected = box_iou(class_boxes, class_boxes).triu_(diagonal=1).max(dim=1).values
    assert torch.equal(max_iou_with_higher_scored(class_boxes), expected)


@pytest.mark.parametrize("levels", [4, 50, 10**6])
def test_fast_nms_matches_straightforward_version_with_ties(levels):
    boxes, scores = tied_candidates(400, 7, levels, seed=levels)
    for top_k, max_det in [(200, 100), (50, 1000), (1000, 30)]:
        got = fast_nms(boxes, scores, 0.5, top_k, max_det)
        expected = straightforward_fast_nms(boxes, scores, 0.5, top_k, max_det)
        for a, b in zip(got, expected):
            assert torch.equal(a, b)


def test_batched_nms_is_torchvision_on_fast_nms_candidates():
    boxes, scores = random_candidates(300, 5, 2)
    got = as_tuples(batched_nms(boxes, scores, 0.5, top_k=40, max_num_detections=60))
    expected = []
    for c in range(5):
        top = scores[c].sort(descending=True).indices[:40]
        kept = top[torchvision.ops.nms(boxes[top], scores[c, top], 0.5)]
        expected += [(scores[c, i].item(), c, int(i)) for i in kept]
    expected.sort(key=lambda t: -t[0])
    assert got == expected[:60]
    # Greedy NMS only lets kept boxes suppress, so it keeps every box Fast NMS keeps.
    fast = {(c, i) for _, c, i in as_tuples(fast_nms(boxes, scores, 0.5, 40, 10**6))}
    assert fast <= {(c, i) for _, c, i in as_tuples(batched_nms(boxes, scores, 0.5, 40, 10**6))}


def test_build_nms_binds_each_variants_settings():
    boxes, scores = random_candidates(80, 3, 6)
    for nms_type, fn, kwargs in [
        ("fast", fast_nms, dict(top_k=20, max_num_detections=15)),
        ("cross_class", cross_class_fast_nms, dict(top_k=20, max_num_detections=-1)),
        ("traditional", traditional_nms, dict(max_num_detections=15, score_threshold=0.3)),
        ("batched", batched_nms, dict(top_k=20, max_num_detections=15)),
    ]:
        nms = build_nms(nms_type, 0.4, top_k=20, max_num_detections=15, score_threshold=0.3)
        assert as_tuples(nms(boxes, scores)) == as_tuples(fn(boxes, scores, 0.4, **kwargs))
    with pytest.raises(ValueError):
        build_nms("soft")


@pytest.mark.parametrize("levels", [4, 50, 10**6])
def test_traceable_fast_nms_equals_fast_nms(levels):
    boxes, scores = tied_candidates(400, 7, levels, seed=levels)
    boxes[9] = boxes[3]  # identical boxes: IoU exactly 1
    for top_k, max_det in [(200, 100), (50, 1000), (1000, 30), (1, 5)]:
        got = fast_nms_traceable(boxes, scores, 0.5, top_k, max_det)
        expected = fast_nms(boxes, scores, 0.5, top_k, max_det)
        for a, b in zip(got, expected):
            assert torch.equal(a, b), (top_k, max_det)
    for n in (0, 1):  # no candidate, one candidate
        got = fast_nms_traceable(boxes[:n], scores[:, :n], 0.5, 200, 100)
        expected = fast_nms(boxes[:n], scores[:, :n], 0.5, 200, 100)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_traceable_fast_nms_exports_for_any_number_of_candidates():
    class Wrapper(torch.nn.Module):
        def forward(self, boxes, scores):
            return fast_nms_traceable(boxes, scores, 0.5, 200, 100)

    boxes, scores = random_candidates(300, 5, 2)
    n = torch.export.Dim("candidates", min=2)
    exported = torch.export.export(
        Wrapper(), (boxes, scores), dynamic_shapes={"boxes": {0: n}, "scores": {1: n}}
    )
    # one program, run on other numbers of candidates (fewer and more than top_k)
    for count, seed in [(150, 3), (700, 4)]:
        boxes, scores = random_candidates(count, 5, seed)
        got = exported.module()(boxes, scores)
        expected = fast_nms(boxes, scores, 0.5, 200, 100)
        assert all(torch.equal(a, b) for a, b in zip(got, expected)), count
