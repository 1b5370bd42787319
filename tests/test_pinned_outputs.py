# Copyright (c) yolact_d2 contributors.
"""
The outputs pinned in tests/data/pinned_outputs.json (see tests/pinned_outputs.py) are still
what the code gives. Tolerances cover the last bits by which another CPU's convolution kernels
may differ, nothing more: same classes in the same order, scores to 1e-4, integer boxes to one
pixel, mask areas to 0.5%, losses to 1e-5.
"""

import json
import numpy as np

import pytest

from pinned_outputs import CONFIGS, PINNED_FILE, detections, training_losses


@pytest.fixture(scope="module")
def pinned():
    with open(PINNED_FILE) as f:
        return json.load(f)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_detections_are_unchanged(name, pinned):
    expected, actual = pinned["detections"][name], detections(name)
    assert expected["count"] > 0
    assert actual["count"] == expected["count"]
    assert actual["classes"] == expected["classes"]
    np.testing.assert_allclose(actual["scores"], expected["scores"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(actual["boxes"], expected["boxes"], rtol=0, atol=1.0)
    np.testing.assert_allclose(actual["mask_areas"], expected["mask_areas"], rtol=5e-3, atol=2)
    assert ("mask_scores" in actual) == ("mask_scores" in expected) == ("plus" in name)
    if "mask_scores" in expected:
        np.testing.assert_allclose(actual["mask_scores"], expected["mask_scores"], atol=1e-4)


@pytest.mark.parametrize(
    "key, config",
    [("losses", "yolact_R_50_FPN_550.yaml"), ("losses_plus", "yolact_plus_R_50_FPN_550.yaml")],
)
def test_training_losses_are_unchanged(key, config, pinned):
    expected, actual = pinned[key], training_losses(config)
    names = ["loss_box", "loss_cls", "loss_mask", "loss_semantic_seg"]
    if "plus" in config:
        names.append("loss_maskiou")
    assert sorted(actual) == sorted(expected) == sorted(names)
    assert all(v > 0 for v in expected.values())
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, err_msg=name)
