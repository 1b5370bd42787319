# Copyright (c) yolact_d2 contributors.
import numpy as np

import pytest
import torch
import torch.nn.functional as F

from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances

from yolact_d2.modeling.backbone.resnet import deformable_block_indices

from common import PLUS_CONFIGS, V1_CONFIGS, calibrate_batch_norm, get_config, get_model

SIZES = {550: [69, 35, 18, 9, 5], 700: [88, 44, 22, 11, 6], 400: [50, 25, 13, 7, 4]}


@pytest.fixture(scope="module")
def r50():
    return get_model("yolact_R_50_FPN_550.yaml")


@pytest.mark.parametrize(
    "config,size",
    [
        ("yolact_R_50_FPN_550.yaml", 550),
        ("yolact_R_101_FPN_400.yaml", 400),
        ("yolact_R_101_FPN_700.yaml", 700),
        ("yolact_DarkNet53_FPN_550.yaml", 550),
    ],
)
def test_fpn_and_protonet_sizes(config, size):
    model = get_model(config)
    with torch.no_grad():
        out = model.predict(torch.zeros(1, 3, size, size))
    sizes = [out["features"][f"p{i}"].shape[-1] for i in range(3, 8)]
    assert sizes == SIZES[size]
    assert all(out["features"][f"p{i}"].shape[1] == 256 for i in range(3, 8))
    assert out["prototypes"].shape == (1, 32, 2 * SIZES[size][0], 2 * SIZES[size][0])
    assert (out["prototypes"] >= 0).all()
    num_priors = 3 * sum(s * s for s in SIZES[size])
    assert out["class_logits"].shape == (1, num_priors, 81)
    assert out["box_deltas"].shape == (1, num_priors, 4)
    assert out["coefficients"].shape == (1, num_priors, 32)
    assert out["coefficients"].abs().max() <= 1


def test_fpn_matches_yolact_definition(r50):
    """Bilinear top-down to the exact size, ReLU on P3-P5, P6/P7 from post-ReLU P5, none between."""
    fpn = r50.backbone
    torch.manual_seed(1)
    x = torch.randn(1, 3, 550, 550)
    with torch.no_grad():
        c = fpn.bottom_up(x)
        got = fpn(x)
        x5 = fpn.fpn_lateral5(c["res5"])
        x4 = F.interpolate(x5, size=(35, 35), mode="bilinear", align_corners=False)
        x4 = x4 + fpn.fpn_lateral4(c["res4"])
        x3 = F.interpolate(x4, size=(69, 69), mode="bilinear", align_corners=False)
        x3 = x3 + fpn.fpn_lateral3(c["res3"])
        p3, p4, p5 = (
            F.relu(fpn.__getattr__(f"fpn_output{i}")(t)) for i, t in [(3, x3), (4, x4), (5, x5)]
        )
        p6 = fpn.top_block.p6(p5)
        p7 = fpn.top_block.p7(p6)
    for name, ref in zip(["p3", "p4", "p5", "p6", "p7"], [p3, p4, p5, p6, p7]):
        torch.testing.assert_close(got[name], ref)
    assert (got["p6"] < 0).any()  # no ReLU on P6


def test_protonet_structure(r50):
    proto = r50.mask_branch.protonet
    torch.manual_seed(2)
    x = torch.randn(1, 256, 7, 9)
    with torch.no_grad():
        y = x
        for conv in proto.convs:
            y = F.relu(F.conv2d(y, conv.weight, conv.bias, padding=1))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        y = F.relu(F.conv2d(y, proto.upsample_conv.weight, proto.upsample_conv.bias, padding=1))
        y = F.relu(F.conv2d(y, proto.predictor.weight, proto.predictor.bias))
        torch.testing.assert_close(proto(x), y)
    assert y.shape == (1, 32, 14, 18)


def test_head_layout_is_anchor_major(r50):
    head = r50.head
    x = torch.randn(1, 256, 2, 3)
    with torch.no_grad():
        logits, deltas, coeffs = head([x])
        feat = head.upfeature(x)
        raw = head.bbox_pred(feat)  # (1, A*4, H, W)
    # prior index (y * W + x) * A + a, field k -> channel a * 4 + k
    for y, xx, a, k in [(0, 0, 0, 0), (1, 2, 2, 3), (0, 1, 1, 2)]:
        assert deltas[0, (y * 3 + xx) * 3 + a, k] == raw[0, a * 4 + k, y, xx]
    assert logits.shape == (1, 18, 81) and coeffs.shape == (1, 18, 32)


@pytest.mark.parametrize("config", sorted(V1_CONFIGS) + sorted(PLUS_CONFIGS))
def test_every_config_builds_and_runs(config):
    model = get_model(config)
    image = torch.randint(0, 256, (3, 237, 301), dtype=torch.uint8)  # not a multiple of 32
    calibrate_batch_norm(model, image)  # realistic, unsaturated detections
    with torch.no_grad():
        out = model([{"image": image, "height": 237, "width": 301}])
    inst = out[0]["instances"]
    assert isinstance(inst, Instances) and inst.image_size == (237, 301)
    n = len(inst)
    assert 0 < n <= 100
    assert inst.pred_masks.shape == (n, 237, 301) and inst.pred_masks.dtype == torch.bool
    assert inst.pred_masks.any(dim=(1, 2)).sum() > 0  # not all masks empty
    assert 0 <= int(inst.pred_classes.min()) and int(inst.pred_classes.max()) < 80
    scores = inst.scores
    assert bool((scores > 0.05).all() and (scores <= 1).all())
    assert bool((scores[:-1] >= scores[1:]).all())  # sorted, as the reference returns them
    boxes = inst.pred_boxes.tensor
    assert torch.equal(boxes, boxes.round()) and bool((boxes[:, 2:] > boxes[:, :2]).all())
    assert bool((boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 301).all())
    assert bool((boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= 237).all())
    assert inst.has("mask_scores") == (config in PLUS_CONFIGS)
    if config in PLUS_CONFIGS:
        assert inst.mask_scores.shape == (n,) and bool((inst.mask_scores >= 0).all())


def test_deformable_block_selection_matches_reference():
    # plus_base: R101 [0,4,23,3] interval 3 -> 11 layers; plus_resnet50: [0,4,6,3] interval 1 -> 13.
    r101 = [deformable_block_indices(n, d, 3) for n, d in zip([3, 4, 23, 3], [0, 4, 23, 3])]
    assert r101 == [[], [0, 3], [0, 3, 6, 9, 12, 15, 18, 21], [0]]
    r50 = [deformable_block_indices(n, d, 1) for n, d in zip([3, 4, 6, 3], [0, 4, 6, 3])]
    assert sum(map(len, r50)) == 13 and r50[0] == []


def test_state_dict_key_counts_match_reference():
    # Reference counts (yolact_reference.md section 13).
    expected = {"yolact_R_50_FPN_550.yaml": 354, "yolact_DarkNet53_FPN_550.yaml": 348}
    for config, count in expected.items():
        assert len(get_model(config).state_dict()) == count


def test_default_predictor_on_a_real_photo():
    from skimage.data import astronaut

    cfg = get_config("yolact_R_50_FPN_550.yaml", ["MODEL.YOLACT.TEST.SCORE_THRESH", "0.0"])
    torch.manual_seed(0)
    predictor = DefaultPredictor(cfg)
    rgb = astronaut()[:333, :417]  # 333 x 417, not a multiple of 32
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    inst = predictor(bgr)["instances"]
    assert inst.image_size == (333, 417)
    assert len(inst) > 0
    assert inst.pred_masks.shape == (len(inst), 333, 417)
    assert inst.pred_masks.dtype == torch.bool
    assert inst.scores.shape == (len(inst),) and (inst.scores[:-1] >= inst.scores[1:]).all()
    boxes = inst.pred_boxes.tensor
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 417).all() and (boxes[:, 3] <= 333).all()
    assert torch.equal(boxes, boxes.round())  # integer pixel boxes, as the reference

    # Same result as the reference pre-processing done by hand on the RGB photo.
    model = predictor.model
    x = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None]
    x = F.interpolate(x, (550, 550), mode="bilinear", align_corners=False)
    mean = torch.tensor([123.68, 116.78, 103.94]).view(1, 3, 1, 1)
    std = torch.tensor([58.40, 57.12, 57.38]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model.postprocess(model.predict((x - mean) / std), [(333, 417)])[0]
    assert torch.equal(ref.pred_classes, inst.pred_classes)
    torch.testing.assert_close(ref.scores, inst.scores)
    assert torch.equal(ref.pred_masks, inst.pred_masks)


def _postprocess(model, boxes, classes, coefficients, prototypes, image_size):
    """The model's own post-processing on made-up network outputs: one prior per detection,
    placed on its box (zero box deltas decode to the prior), its class certain."""
    n = len(boxes)
    logits = torch.full((1, n, model.num_classes + 1), -10.0)
    logits[0, torch.arange(n), torch.as_tensor(classes) + 1] = 10.0
    outputs = {
        "priors": torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1),
        "box_deltas": torch.zeros((1, n, 4)),
        "class_logits": logits,
        "coefficients": coefficients[None],
        "prototypes": prototypes[None],
    }
    instances = model.postprocess(outputs, [image_size])[0]
    # Fast NMS applies no second score threshold (as the reference): every class of a prior
    # that passed the pre-filter is a detection; the made-up ones are those with certain scores.
    return instances[instances.scores > 0.5]


def test_full_image_masks_are_not_squeezed_into_boxes(r50):
    """A mask assembled at a known place comes back at that place in the original image."""
    protos = torch.zeros(2, 20, 20)
    protos[0, 5:10, 10:15] = 1.0  # object in rows 5-9, cols 10-14 (prototype pixels)
    coeffs = torch.tensor([[20.0, 0.0]])
    boxes = torch.tensor([[0.5, 0.25, 0.75, 0.5]])  # the object's box, relative
    inst = _postprocess(r50, boxes, [3], coeffs, protos - 0.5 * (protos == 0), (40, 80))
    mask = inst.pred_masks[0]
    ys, xs = torch.nonzero(mask, as_tuple=True)
    # 20 -> 40 rows (x2), 20 -> 80 cols (x4): rows 10..19, cols 40..59
    assert ys.min() == 10 and ys.max() == 19 and xs.min() == 40 and xs.max() == 59
    assert inst.pred_boxes.tensor.tolist() == [[40.0, 10.0, 60.0, 20.0]]
    assert inst.pred_classes.tolist() == [3]


def test_zero_area_boxes_are_dropped(r50):
    protos = torch.zeros(1, 8, 8)
    coeffs = torch.zeros(2, 1)
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.301, 0.6]])
    inst = _postprocess(r50, boxes, [0, 1], coeffs, protos, (50, 50))
    assert len(inst) == 1 and inst.pred_classes.tolist() == [0]
    assert inst.pred_boxes.tensor.tolist() == [[5.0, 5.0, 25.0, 25.0]]


def test_batched_inference_matches_single(r50):
    images = [
        torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in [(200, 300), (321, 123)]
    ]
    with torch.no_grad():
        batched = r50([{"image": im} for im in images])
        single = [r50([{"image": im}])[0] for im in images]
    for b, s in zip(batched, single):
        b, s = b["instances"], s["instances"]
        assert b.image_size == s.image_size and len(b) == len(s) > 0
        assert torch.equal(b.pred_classes, s.pred_classes)
        torch.testing.assert_close(b.scores, s.scores, rtol=1e-4, atol=1e-5)
        assert torch.equal(b.pred_boxes.tensor, s.pred_boxes.tensor)
        # A batch may sum its convolutions in another order: masks agree to the last pixels.
        inter = (b.pred_masks & s.pred_masks).sum()
        union = (b.pred_masks | s.pred_masks).sum()
        assert union > 0 and inter / union > 0.999


@pytest.mark.parametrize("chunk", [1, 2])
def test_cpu_inference_chunks_are_one_call_per_chunk(r50, chunk, monkeypatch):
    """MODEL.YOLACT.CPU_INFERENCE_CHUNK: a batch runs through the network in chunks, with the
    outputs of separate calls on those chunks, stacked in order; training and chunk 0 run
    the whole batch at once."""
    x = torch.randn(3, 3, 550, 550, generator=torch.Generator().manual_seed(5))
    calls = []
    hook = r50.backbone.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    monkeypatch.setattr(r50, "cpu_inference_chunk", chunk)
    try:
        with torch.no_grad():
            chunked = r50.predict(x)
            parts = [r50._predict(x[i : i + chunk]) for i in range(0, 3, chunk)]
            monkeypatch.setattr(r50, "cpu_inference_chunk", 0)
            whole = r50.predict(x)
    finally:
        hook.remove()
    sizes = [min(chunk, 3 - i) for i in range(0, 3, chunk)]
    assert calls == sizes + sizes + [3]
    for key in ("class_logits", "box_deltas", "coefficients", "prototypes"):
        assert torch.equal(chunked[key], torch.cat([p[key] for p in parts])), key
        torch.testing.assert_close(chunked[key], whole[key], rtol=1e-4, atol=1e-4)
    assert chunked["features"].keys() == whole["features"].keys()
    assert torch.equal(chunked["priors"], whole["priors"])


def test_cpu_inference_chunk_must_not_be_negative():
    with pytest.raises(ValueError, match="CPU_INFERENCE_CHUNK"):
        get_model("yolact_R_50_FPN_550.yaml", ["MODEL.YOLACT.CPU_INFERENCE_CHUNK", -1])
