# Copyright (c) yolact_d2 contributors.
"""
The converter under fire (issue 12): random bit flips, truncation at random offsets, one tensor
of a wrong shape or dtype, an extra or a missing key. Every time: a clear error naming the file
(or the tensor) and the destination untouched - or, where a flip only hit bytes no reader uses
(the zip records' alignment padding), exactly the clean conversion.
"""

import os
import random

import pytest
import torch
from test_convert import save, synthetic_checkpoint

from yolact_d2.checkpoint import convert_yolact_checkpoint

NAME = "yolact_resnet50_54_800000.pth"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(bytes of a synthetic reference checkpoint, its clean conversion, a work directory)."""
    root = tmp_path_factory.mktemp("fuzz")
    src = save(synthetic_checkpoint("yolact_resnet50"), root / NAME)
    reference = str(root / "reference.pth")
    convert_yolact_checkpoint(src, reference)
    return open(src, "rb").read(), torch.load(reference, weights_only=False)["model"], root


def _convert(data: bytes, root):
    """Converts ``data`` over an existing destination; returns the error or the model dict."""
    src, dst = root / NAME, root / "out" / "dst.pth"
    os.makedirs(dst.parent, exist_ok=True)
    src.write_bytes(data)
    dst.write_bytes(b"previous")
    try:
        convert_yolact_checkpoint(str(src), str(dst))
    except (ValueError, OSError) as error:
        assert dst.read_bytes() == b"previous", "a failed conversion touched the destination"
        assert sorted(os.listdir(dst.parent)) == ["dst.pth"], "a temporary file was left"
        return error
    return torch.load(str(dst), weights_only=False)["model"]


def _assert_clear(error, *phrases):
    assert isinstance(error, (ValueError, OSError)), f"converted: {error!r}"
    message = str(error)
    assert "Traceback" not in message and len(message.splitlines()[0]) < 600
    for phrase in phrases:
        assert phrase in message, (phrase, message)


def test_random_bit_flips(source):
    data, reference, root = source
    rng = random.Random(0)
    errors = 0
    for _ in range(300):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            corrupt[rng.randrange(len(corrupt))] ^= 1 << rng.randrange(8)
        result = _convert(bytes(corrupt), root)
        if isinstance(result, Exception):
            _assert_clear(result, NAME)
            errors += 1
        else:  # only unused bytes were hit: the very same weights
            assert result.keys() == reference.keys()
            assert all(torch.equal(result[k], reference[k]) for k in reference)
    assert errors > 240  # most flips land in data, headers or the pickle and are caught


def test_truncation_at_random_offsets(source):
    data, _, root = source
    rng = random.Random(1)
    for offset in [0, 1, len(data) - 1] + [rng.randrange(len(data)) for _ in range(100)]:
        _assert_clear(_convert(data[:offset], root), NAME)


def test_one_tensor_of_a_wrong_shape_or_dtype(source, tmp_path):
    _, _, root = source
    rng = random.Random(2)
    keys = [k for k in synthetic_checkpoint("yolact_resnet50") if "num_batches" not in k]
    for key in rng.sample(keys, 25):
        state = synthetic_checkpoint("yolact_resnet50")
        shape = list(state[key].shape)
        shape[0] += 1
        state[key] = torch.zeros(shape)
        _assert_clear(_convert(_bytes(state, tmp_path), root), key)
    for key in rng.sample(keys, 25):
        state = synthetic_checkpoint("yolact_resnet50")
        dtype = rng.choice([torch.int32, torch.float64, torch.float16, torch.bool])
        state[key] = state[key].to(dtype)
        _assert_clear(_convert(_bytes(state, tmp_path), root), key, str(dtype)[6:])


def test_an_extra_or_a_missing_key(source, tmp_path):
    _, _, root = source
    rng = random.Random(3)
    for _ in range(10):
        state = synthetic_checkpoint("yolact_resnet50")
        missing = rng.choice(list(state))
        del state[missing]
        _assert_clear(_convert(_bytes(state, tmp_path), root), "missing", missing)
        state = synthetic_checkpoint("yolact_resnet50")
        extra = f"fpn.extra_{rng.randrange(1000)}.weight"
        state[extra] = torch.zeros(4)
        _assert_clear(_convert(_bytes(state, tmp_path), root), "unexpected", extra)


def _bytes(state, tmp_path):
    return open(save(state, tmp_path / "state.pth"), "rb").read()
