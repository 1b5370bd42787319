# Copyright (c) yolact_d2 contributors.
"""
MODEL.WEIGHTS that cannot be used as given: a URL that cannot be downloaded (offline clusters) and
full YOLACT weights of another architecture than the config's; as exceptions, and as the one
``error:`` line of train_net.py.
"""

import logging
import os
import re
import subprocess
import sys

import pytest
import torch
import torchvision

from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager

from yolact_d2.checkpoint.architecture import describe_yolact_d2_state_dict
from yolact_d2.checkpoint.checkpointer import (
    WeightsError,
    WeightsMismatchError,
    WeightsUnavailableError,
    YolactCheckpointer,
    url_cache_path,
)
from yolact_d2.config import get_yolact_cfg
from yolact_d2.engine import YolactTrainer

from common import REPO_ROOT, get_config, get_model
from training import CKPT_LOGGER, tiny_cfg

TRAIN_NET = os.path.join(REPO_ROOT, "train_net.py")
# Nothing listens on the discard port: the connection is refused at once.
UNREACHABLE = "http://127.0.0.1:9/models/resnet50-19c8e357.pth"
REFUSED = r"URLError: <urlopen error \[Errno \d+\] Connection refused>"
DOCS = "docs/GETTING_STARTED.md#imagenet-weights-and-offline-clusters"

R50 = "yolact_resnet50 (ResNet-50-FPN, 3 priors per cell, 32 prototypes)"
R101 = "yolact_base/im400/im700 (ResNet-101-FPN, 3 priors per cell, 32 prototypes)"
PLUS_R50 = (
    "yolact_plus_resnet50 (ResNet-50-FPN with DCNv2, 9 priors per cell, 32 prototypes, "
    "mask-IoU net)"
)
ALLOW = "MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH"
ADVICE = (
    "Use the config of these weights, or set MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH True to load "
    "only the tensors whose names and shapes match."
)


def unavailable_pattern(url, cached):
    """The whole message of a URL that cannot be downloaded (the OS words the reason)."""
    return (
        re.escape(f"cannot download the weights {url!r} (")
        + REFUSED
        + re.escape(
            f"). Without network access, put the file at {cached!r} (Detectron2 reads it there "
            "instead of downloading: $FVCORE_CACHE, default ~/.torch/iopath_cache, then the "
            "URL's path) or give a local file: MODEL.WEIGHTS /local/path.pth. See " + DOCS
        )
    )


def run_train_net(*args, env=None):
    return subprocess.run(
        [sys.executable, TRAIN_NET, *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


# ------------------------------------------------------------------------------------------------
# A URL that cannot be downloaded
# ------------------------------------------------------------------------------------------------
def test_cache_path_is_where_detectron2_looks(tmp_path, monkeypatch):
    """url_cache_path is the file Detectron2's PathManager returns instead of downloading."""
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path))
    cases = {
        # (the URLs are used nowhere else: iopath remembers a URL's file for the process)
        "https://example.org/yolact_d2_tests/models/w.pth": "yolact_d2_tests/models/w.pth",
        "http://example.org:8080/yolact_d2_tests/top.pth": "yolact_d2_tests/top.pth",
        "detectron2://yolact_d2_tests/MSRA/R-50.pkl": "detectron2/yolact_d2_tests/MSRA/R-50.pkl",
    }
    for url, relative in cases.items():
        expected = str(tmp_path / relative)
        assert url_cache_path(url) == expected, url
        os.makedirs(os.path.dirname(expected), exist_ok=True)
        with open(expected, "wb") as f:
            f.write(b"cached")
        assert PathManager.get_local_path(url) == expected, url
    # The query (e.g. ?matching_heuristics=True) is dropped, as DetectionCheckpointer drops it.
    query = "https://example.org/yolact_d2_tests/models/w.pth?matching_heuristics=True"
    assert url_cache_path(query) == str(tmp_path / "yolact_d2_tests/models/w.pth")
    # Not downloaded, or cached under a random name by iopath: no path to give.
    assert url_cache_path("/local/model.pth") is None
    assert url_cache_path("s3://bucket/model.pth") is None
    assert url_cache_path("https://example.org/" + "w" * 251) is None


def test_unreachable_url_names_the_url_and_the_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    cached = str(tmp_path / "cache" / "models" / "resnet50-19c8e357.pth")
    model = build_model(get_config("yolact_R_50_FPN_550.yaml", ["MODEL.YOLACT.INPUT_SIZE", 128]))
    with pytest.raises(WeightsUnavailableError) as error:
        YolactCheckpointer(model).load(UNREACHABLE)
    assert re.fullmatch(unavailable_pattern(UNREACHABLE, cached), str(error.value)), error.value
    assert isinstance(error.value, WeightsError) and isinstance(error.value, ValueError)

    # The file put at the printed path is what the same load reads, without any download.
    torch.manual_seed(0)
    state = torchvision.models.resnet50(weights=None).state_dict()
    torch.save(state, cached)
    YolactCheckpointer(model).load(UNREACHABLE)
    assert torch.equal(
        model.state_dict()["backbone.bottom_up.res4.5.conv3.norm.running_var"],
        state["layer3.5.bn3.running_var"],
    )


def test_train_net_unreachable_url_is_one_error_line(tmp_path):
    url = "http://127.0.0.1:9/x.pth"
    cache = tmp_path / "cache"
    proc = run_train_net(
        "--config-file", "configs/yolact_R_50_FPN_550.yaml", "--eval-only",
        "MODEL.WEIGHTS", url, "MODEL.DEVICE", "cpu", "OUTPUT_DIR", tmp_path / "out",
        env={"FVCORE_CACHE": str(cache)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0]
    pattern = unavailable_pattern(url, str(cache / "x.pth"))
    assert re.fullmatch("error: " + pattern, errors[0]), errors[0]


# ------------------------------------------------------------------------------------------------
# Weights of another architecture
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random YOLACT R-50 and YOLACT++ R-50 weights, saved as Detectron2 checkpoints."""
    out = tmp_path_factory.mktemp("weights")
    files = {}
    for name, config in [
        ("r50", "yolact_R_50_FPN_550.yaml"),
        ("plus", "yolact_plus_R_50_FPN_550.yaml"),
    ]:
        files[name] = str(out / f"{name}.pth")
        torch.save({"model": get_model(config, seed=3).state_dict()}, files[name])
    return files


def test_describe_state_dicts():
    described = {
        name: describe_yolact_d2_state_dict(get_model(name, seed=0).state_dict())
        for name in ["yolact_DarkNet53_FPN_550.yaml", "yolact_R_101_FPN_700.yaml"]
    }
    assert described == {
        "yolact_DarkNet53_FPN_550.yaml": (
            "yolact_darknet53 (DarkNet-53-FPN, 3 priors per cell, 32 prototypes)"
        ),
        "yolact_R_101_FPN_700.yaml": R101,
    }
    # No reference layout: described by its parts (and still by them with other sizes).
    tiny = build_model(tiny_cfg(opts=["MODEL.YOLACT.NUM_PROTOTYPES", 16])).state_dict()
    assert describe_yolact_d2_state_dict(tiny) == (
        "YOLACT (ResNet-18-FPN, 3 priors per cell, 16 prototypes)"
    )
    other_classes = get_model("yolact_R_50_FPN_550.yaml", ["MODEL.YOLACT.NUM_CLASSES", 3])
    assert describe_yolact_d2_state_dict(other_classes.state_dict()) == R50


def test_r50_weights_in_r101_config_is_an_error(weights):
    model = build_model(get_config("yolact_R_101_FPN_550.yaml"))
    with pytest.raises(WeightsMismatchError) as error:
        YolactCheckpointer(model).load(weights["r50"])
    assert str(error.value) == (
        f"'{weights['r50']}' holds {R50} weights, but the config builds {R101}: 255 of the "
        "model's tensors are not in the file (e.g. backbone.bottom_up.res4.6.conv1.weight). "
        + ADVICE
    )


def test_r50_weights_in_r101_config_load_when_allowed(weights, caplog):
    cfg = get_config("yolact_R_101_FPN_550.yaml", [ALLOW, True])
    torch.manual_seed(1)
    model = build_model(cfg)
    fresh = model.state_dict()["backbone.bottom_up.res4.6.conv1.weight"].clone()
    checkpointer = YolactCheckpointer(model, allow_mismatch=cfg.MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH)
    with caplog.at_level(logging.INFO, logger=CKPT_LOGGER):
        checkpointer.load(weights["r50"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0] == (
        f"MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH: loading '{weights['r50']}' ({R50} weights) into "
        f"{R101}; only the tensors whose names and shapes match are loaded, the others keep "
        "their initialisation: 255 of the model's tensors are not in the file (e.g. "
        "backbone.bottom_up.res4.6.conv1.weight)."
    )
    source = torch.load(weights["r50"], weights_only=True)["model"]
    state = model.state_dict()
    for key in ["backbone.bottom_up.res4.5.conv3.weight", "head.cls_score.weight"]:
        assert torch.equal(state[key], source[key]), key
    assert torch.equal(state["backbone.bottom_up.res4.6.conv1.weight"], fresh)


@pytest.mark.parametrize("direction", ["plus weights, v1 config", "v1 weights, plus config"])
def test_yolact_and_yolact_plus_do_not_mix(weights, direction):
    if direction == "plus weights, v1 config":
        file, config, theirs, ours = weights["plus"], "yolact_R_50_FPN_550.yaml", PLUS_R50, R50
        differences = (
            "51 of the file's are not in the model (e.g. backbone.bottom_up.res3.0.conv2.bias), "
            "4 have another shape (e.g. head.bbox_pred.weight: (36, 256, 3, 3) in the file, "
            "(12, 256, 3, 3) in the model)"
        )
    else:
        file, config, theirs, ours = weights["r50"], "yolact_plus_R_50_FPN_550.yaml", R50, PLUS_R50
        differences = (
            "51 of the model's tensors are not in the file (e.g. "
            "backbone.bottom_up.res3.0.conv2.bias), 4 have another shape (e.g. "
            "head.bbox_pred.weight: (12, 256, 3, 3) in the file, (36, 256, 3, 3) in the model)"
        )
    model = build_model(get_config(config))
    with pytest.raises(WeightsMismatchError) as error:
        YolactCheckpointer(model).load(file)
    assert str(error.value) == (
        f"'{file}' holds {theirs} weights, but the config builds {ours}: {differences}. " + ADVICE
    )


def test_same_architecture_other_classes_is_no_mismatch(weights, caplog):
    """Fine-tuning to another NUM_CLASSES (and without the semantic-segmentation conv) is not an
    architecture change: the class-dependent layers are re-initialised, nothing is an error."""
    opts = ["MODEL.YOLACT.NUM_CLASSES", 3, "MODEL.YOLACT.LOSS.SEMANTIC_SEG_WEIGHT", 0.0]
    model = build_model(get_config("yolact_R_50_FPN_550.yaml", opts))
    with caplog.at_level(logging.INFO, logger=CKPT_LOGGER):
        YolactCheckpointer(model).load(weights["r50"])
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("The checkpoint has a different number of classes") for m in messages)
    assert not any("ALLOW_WEIGHTS_MISMATCH" in m for m in messages)


def test_the_trainer_takes_the_key_from_its_config(tmp_path, caplog):
    """YolactTrainer's checkpointer reads MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH from its config."""
    torch.manual_seed(0)
    source = build_model(tiny_cfg(opts=["MODEL.YOLACT.NUM_PROTOTYPES", 16]))
    path = str(tmp_path / "prototypes16.pth")
    torch.save({"model": source.state_dict()}, path)
    expected = (
        f"'{path}' holds YOLACT (ResNet-18-FPN, 3 priors per cell, 16 prototypes) weights, but "
        "the config builds YOLACT (ResNet-18-FPN, 3 priors per cell, 32 prototypes): 4 have "
        "another shape (e.g. head.coefficients.weight: (48, 256, 3, 3) in the file, "
        "(96, 256, 3, 3) in the model). " + ADVICE
    )
    trainer = YolactTrainer(tiny_cfg(str(tmp_path / "strict"), ["MODEL.WEIGHTS", path]))
    with pytest.raises(WeightsMismatchError) as error:
        trainer.resume_or_load(resume=False)
    assert str(error.value) == expected

    cfg = tiny_cfg(str(tmp_path / "allowed"), ["MODEL.WEIGHTS", path, ALLOW, True])
    trainer = YolactTrainer(cfg)
    with caplog.at_level(logging.INFO, logger=CKPT_LOGGER):
        trainer.resume_or_load(resume=False)
    assert any(r.getMessage().startswith(f"{ALLOW}: loading '{path}'") for r in caplog.records)
    state = trainer.model.state_dict()
    assert torch.equal(state["head.bbox_pred.weight"], source.state_dict()["head.bbox_pred.weight"])


def test_train_net_mismatch_is_one_error_line(weights, tmp_path):
    proc = run_train_net(
        "--config-file", "configs/yolact_R_101_FPN_550.yaml", "--eval-only",
        "MODEL.WEIGHTS", weights["r50"], "MODEL.DEVICE", "cpu", "OUTPUT_DIR", tmp_path / "out",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: '{weights['r50']}' holds {R50} weights, but the config builds {R101}: 255 of "
        "the model's tensors are not in the file (e.g. backbone.bottom_up.res4.6.conv1.weight). "
        + ADVICE
    )


def test_the_key_is_off_by_default():
    assert get_yolact_cfg().MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH is False
