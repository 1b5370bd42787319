# Copyright (c) yolact_d2 contributors.
import math

import pytest
import torch

from yolact_d2.modeling.priors import YolactPriorGenerator, generate_level_priors

from common import get_config

SIZES_550 = [(69, 69), (35, 35), (18, 18), (9, 9), (5, 5)]
SIZES_700 = [(88, 88), (44, 44), (22, 22), (11, 11), (6, 6)]
SIZES_400 = [(50, 50), (25, 25), (13, 13), (7, 7), (4, 4)]


def reference_priors(sizes, scales, ratios, input_size, square):
    """The reference's nested Python loop, in float64, then cast to float32."""
    out = []
    for (conv_h, conv_w), level_scales in zip(sizes, scales):
        for j in range(conv_h):
            for i in range(conv_w):
                x = (i + 0.5) / conv_w
                y = (j + 0.5) / conv_h
                for scale in level_scales:
                    for ar in ratios:
                        ar = math.sqrt(ar)
                        w = scale * ar / input_size
                        h = scale / ar / input_size
                        if square:
                            h = w
                        out += [x, y, w, h]
    return torch.tensor(out, dtype=torch.float64).view(-1, 4).float()


CASES = [
    ("yolact_R_101_FPN_550.yaml", SIZES_550, 19248),
    ("yolact_R_50_FPN_550.yaml", SIZES_550, 19248),
    ("yolact_DarkNet53_FPN_550.yaml", SIZES_550, 19248),
    ("yolact_R_101_FPN_700.yaml", SIZES_700, 30963),
    ("yolact_R_101_FPN_400.yaml", SIZES_400, 10077),
    ("yolact_plus_R_101_FPN_550.yaml", SIZES_550, 57744),
    ("yolact_plus_R_50_FPN_550.yaml", SIZES_550, 57744),
]


@pytest.mark.parametrize("config,sizes,count", CASES)
def test_priors_match_reference_loop_bit_exactly(config, sizes, count):
    cfg = get_config(config)
    gen = YolactPriorGenerator(cfg)
    priors = gen(sizes)
    assert priors.shape == (count, 4)
    assert priors.dtype == torch.float32
    p = cfg.MODEL.YOLACT.PRIORS
    expected = reference_priors(
        sizes, p.SCALES, p.ASPECT_RATIOS, cfg.MODEL.YOLACT.INPUT_SIZE, p.SQUARE
    )
    assert torch.equal(priors, expected)


def test_v1_priors_first_and_last_values():
    priors = YolactPriorGenerator(get_config("yolact_R_101_FPN_550.yaml"))(SIZES_550)
    c = 0.5 / 69
    # Three square priors of side 24, 24/sqrt(2), 24*sqrt(2) pixels at the first P3 cell.
    expected_first = torch.tensor(
        [
            [c, c, 24 / 550, 24 / 550],
            [c, c, 24 * math.sqrt(0.5) / 550, 24 * math.sqrt(0.5) / 550],
            [c, c, 24 * math.sqrt(2) / 550, 24 * math.sqrt(2) / 550],
        ],
        dtype=torch.float64,
    ).float()
    assert torch.equal(priors[:3], expected_first)
    # The last prior: bottom-right P7 cell (4.5 / 5), side 384 * sqrt(2) / 550.
    side = 384 * math.sqrt(2) / 550
    assert torch.equal(
        priors[-1], torch.tensor([0.9, 0.9, side, side], dtype=torch.float64).float()
    )
    # The second cell of P3 is one step to the right (x varies fastest).
    assert priors[3, 0].item() == pytest.approx(1.5 / 69)
    assert priors[3, 1].item() == pytest.approx(c)


def test_plus_priors_are_scale_major_and_not_square():
    priors = YolactPriorGenerator(get_config("yolact_plus_R_101_FPN_550.yaml"))(SIZES_550)
    wh = priors[:9, 2:] * 550
    s1 = 24 * 2 ** (1 / 3)
    expected = torch.tensor(
        [
            [24, 24],
            [24 * math.sqrt(0.5), 24 / math.sqrt(0.5)],
            [24 * math.sqrt(2), 24 / math.sqrt(2)],
            [s1, s1],
            [s1 * math.sqrt(0.5), s1 / math.sqrt(0.5)],
        ]
    )
    torch.testing.assert_close(wh[:5], expected, rtol=1e-5, atol=1e-4)
    # ratio 0.5 is width / height: a tall prior.
    assert wh[1, 0] < wh[1, 1]


def test_level_priors_are_cached_per_size():
    gen = YolactPriorGenerator(get_config("yolact_R_50_FPN_550.yaml"))
    a = gen(SIZES_550)
    assert gen(SIZES_550) is a
    b = gen(SIZES_400)
    assert b.shape[0] == 10077 and b is not a


def test_wrong_number_of_levels_is_a_clear_error():
    gen = YolactPriorGenerator(get_config("yolact_R_50_FPN_550.yaml"))
    with pytest.raises(ValueError, match="SCALES has 5 levels"):
        gen(SIZES_550[:3])


def test_generate_level_priors_small_grid():
    p = generate_level_priors((2, 3), [10.0], [1.0], 100, square=False)
    assert p.shape == (6, 4)
    xs = torch.tensor([1 / 6, 3 / 6, 5 / 6] * 2)
    ys = torch.tensor([0.25] * 3 + [0.75] * 3)
    torch.testing.assert_close(p[:, 0], xs)
    torch.testing.assert_close(p[:, 1], ys)
    assert torch.all(p[:, 2:] == 0.1)
