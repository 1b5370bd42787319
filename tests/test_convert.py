# Copyright (c) yolact_d2 contributors.
"""
Tests of the reference-checkpoint converter (yolact_d2.checkpoint, tools/convert_yolact_weights.py).

Synthetic reference checkpoints are built from the reference key lists: tensor number i holds
the constant i + 1 everywhere, so where each weight lands after conversion can be checked
exactly. The constants are zero-stride expanded scalars, which keeps the files tiny.
"""

import logging
import os
import re
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from yolact_d2.checkpoint import (
    convert_state_dict,
    convert_yolact_checkpoint,
    detect_architecture,
    save_converted_checkpoint,
    to_reference_state_dict,
    yolact_d2_key,
)
from yolact_d2.checkpoint.checkpointer import YolactCheckpointer

from common import PLUS_CONFIGS, REPO_ROOT, V1_CONFIGS, get_config, load_script

# The reference key lists live beside the checkout, in ../shared (as on every developer machine
# and in CI). Missing lists are an error, not a skip.
REFERENCE_KEYS_DIR = os.environ.get(
    "YOLACT_REFERENCE_KEYS",
    os.path.join(os.path.dirname(REPO_ROOT), "shared", "reference", "yolact_state_dict_keys"),
)
assert os.path.isdir(REFERENCE_KEYS_DIR), f"reference key lists not found in {REFERENCE_KEYS_DIR}"
CLI = os.path.join(REPO_ROOT, "tools", "convert_yolact_weights.py")
# Reference config name -> yolact_d2 config file.
CONFIG_OF = {ref: config for config, ref in {**V1_CONFIGS, **PLUS_CONFIGS}.items()}


# ------------------------------------------------------------------------------------------------
# Synthetic reference checkpoints
# ------------------------------------------------------------------------------------------------
def read_reference_keys(name):
    """{key: shape} from the "key (shape)" lines of a reference key list."""
    keys = OrderedDict()
    with open(os.path.join(REFERENCE_KEYS_DIR, f"{name}.txt")) as f:
        for line in f:
            key, shape = line.strip().split(" ", 1)
            keys[key] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return keys


def constant(value, shape, dtype=torch.float32):
    return torch.tensor(value, dtype=dtype).expand(shape)


def synthetic_checkpoint(name):
    """A reference state dict whose i-th tensor is filled with i + 1."""
    return OrderedDict(
        (key, constant(i + 1, shape, torch.int64 if "num_batches" in key else torch.float32))
        for i, (key, shape) in enumerate(read_reference_keys(name).items())
    )


def save(obj, path):
    torch.save(obj, str(path))
    return str(path)


# ------------------------------------------------------------------------------------------------
# Where each reference key must land, written independently of the converter's rules
# ------------------------------------------------------------------------------------------------
PROTO_TARGETS = {"0": "convs.0", "2": "convs.1", "4": "convs.2", "8": "upsample_conv"}
PROTO_TARGETS["10"] = "predictor"
HEAD_TARGETS = {"upfeature.0": "upfeature", "bbox_layer": "bbox_pred", "conf_layer": "cls_score"}
HEAD_TARGETS["mask_layer"] = "coefficients"
FPN_TARGETS = {
    "lat_layers": lambda i: f"fpn_lateral{5 - i}",
    "pred_layers": lambda i: f"fpn_output{5 - i}",
    "downsample_layers": lambda i: f"top_block.p{6 + i}",
}


def norm_if(is_norm):
    return ".norm" if is_norm else ""


def resnet_target(parts):
    if parts in (["conv1"], ["bn1"]):
        return "stem.conv1" + norm_if(parts == ["bn1"])
    _, stage, block, *rest = parts
    prefix = f"res{int(stage) + 2}.{block}"
    if rest[0] == "downsample":
        return f"{prefix}.shortcut" + norm_if(rest[1] == "1")
    if rest[0].startswith("bn"):
        return f"{prefix}.conv{rest[0][2:]}.norm"
    return ".".join([prefix] + rest)


def darknet_target(parts):
    if parts[0] == "_preconv":
        return "stem" + norm_if(parts[1] == "1")
    _, stage, block, *rest = parts
    prefix = f"dark{int(stage) + 1}.{block}"
    if block == "0":
        return prefix + norm_if(rest == ["1"])
    conv, index = rest
    return f"{prefix}.{conv}" + norm_if(index == "1")


def expected_target(key, darknet):
    module, _, param = key.rpartition(".")
    parts = module.split(".")
    if parts[0] == "backbone":
        bottom_up = darknet_target if darknet else resnet_target
        target = "backbone.bottom_up." + bottom_up(parts[1:])
    elif parts[0] == "fpn":
        target = "backbone." + FPN_TARGETS[parts[1]](int(parts[2]))
    elif parts[0] == "proto_net":
        target = "mask_branch.protonet." + PROTO_TARGETS[parts[1]]
    elif parts[0] == "prediction_layers":
        target = "head." + HEAD_TARGETS[".".join(parts[2:])]
    elif parts[0] == "maskiou_net":
        target = "mask_branch.maskiou_net.net." + parts[2]
    elif parts[0] == "semantic_seg_conv":
        target = "mask_branch.semantic_seg_conv"
    else:
        raise AssertionError(f"no expected place for {key}")
    return f"{target}.{param}"


def fill_model(model, value):
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.fill_(value)


def assert_weights_landed(model, source, darknet):
    """Every source constant is found at its target, and every model tensor got one."""
    model_sd = model.state_dict()
    targets = {expected_target(k, darknet): v for k, v in source.items()}
    assert set(targets) == set(model_sd)
    wrong = [k for k, v in targets.items() if not torch.equal(model_sd[k], v)]
    assert not wrong, f"{len(wrong)} misplaced weights, e.g. {wrong[:5]}"


# ------------------------------------------------------------------------------------------------
# Conversion of every architecture, loaded into the matching model
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CONFIG_OF))
def test_convert_and_load(name, tmp_path, caplog):
    source = synthetic_checkpoint(name)
    src = save(source, tmp_path / f"{name}_54_800000.pth")
    dst = str(tmp_path / "converted.pth")

    arch = convert_yolact_checkpoint(src, dst)
    assert (arch.name, arch.config_file) == (name, f"configs/{CONFIG_OF[name]}")
    assert (arch.num_classes, arch.num_prototypes, arch.alternatives) == (80, 32, ())

    saved = torch.load(dst, weights_only=True)
    assert saved["__author__"] == "yolact_d2" and saved["matching_heuristics"] is False
    assert saved["yolact_architecture"] == name
    assert saved["yolact_config"] == f"configs/{CONFIG_OF[name]}"
    assert len(saved["model"]) == len(source)

    model = build_model(get_config(CONFIG_OF[name]))
    darknet = "darknet" in name
    fill_model(model, -1)
    incompatible = model.load_state_dict(saved["model"], strict=True)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert_weights_landed(model, source, darknet)

    # Detectron2's checkpointer (DefaultPredictor) and ours (train_net.py): no missing or
    # unexpected keys, no warning; ours also finds the architecture the config's.
    for checkpointer in (DetectionCheckpointer, YolactCheckpointer):
        fill_model(model, -1)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            checkpointer(model).load(dst)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert_weights_landed(model, source, darknet)


# What the converter logs about the training-only conv (tools/convert_yolact_weights.py prints
# it), and what each checkpointer logs when the config has no such layer.
CONVERTER_NOTE = (
    "Kept the training-only semantic_seg_conv weights (for fine-tuning; inference never runs "
    "them). With MODEL.YOLACT.LOSS.SEMANTIC_SEG_WEIGHT 0 the model has no such layer: "
    "YolactCheckpointer skips them (logged at INFO), Detectron2's DetectionCheckpointer "
    "(DefaultPredictor) warns that they are not used by the model; every other weight loads the "
    "same."
)
DETECTRON2_WARNING = (
    "The checkpoint state_dict contains keys that are not used by the model:\n"
    "  mask_branch.semantic_seg_conv.{bias, weight}"
)
YOLACT_INFO = (
    "Not loading the checkpoint's mask_branch.semantic_seg_conv: this model has none "
    "(MODEL.YOLACT.LOSS.SEMANTIC_SEG_WEIGHT 0); it only trains the semantic segmentation loss, "
    "inference never runs it."
)


def test_load_without_semantic_seg_conv(tmp_path, caplog):
    """A model built without the training-only conv: the converter's note is what happens."""
    source = synthetic_checkpoint("yolact_resnet50")
    dst = str(tmp_path / "r50.pth")
    with caplog.at_level(logging.INFO, logger="yolact_d2.checkpoint"):
        convert_yolact_checkpoint(save(source, tmp_path / "yolact_resnet50_1_2.pth"), dst)
    assert CONVERTER_NOTE in [r.getMessage() for r in caplog.records]
    cfg = get_config("yolact_R_50_FPN_550.yaml", ["MODEL.YOLACT.LOSS.SEMANTIC_SEG_WEIGHT", 0.0])
    model = build_model(cfg)
    assert not any("semantic_seg_conv" in k for k in model.state_dict())
    protonet_value = source["proto_net.10.weight"].flatten()[0]
    for checkpointer, expected in [
        (DetectionCheckpointer, [(logging.WARNING, DETECTRON2_WARNING)]),
        (YolactCheckpointer, [(logging.INFO, YOLACT_INFO)]),
    ]:
        fill_model(model, -1)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="fvcore.common.checkpoint"):
            checkpointer(model).load(dst)
        logged = [
            (r.levelno, re.sub(r"\x1b\[[0-9;]*m", "", r.getMessage()))  # fvcore's colours
            for r in caplog.records
            if r.name == "fvcore.common.checkpoint" and "Loading from" not in r.getMessage()
        ]
        assert logged == expected, checkpointer.__name__
        predictor_weight = model.mask_branch.protonet.predictor.weight
        assert torch.equal(predictor_weight, protonet_value.expand(32, 256, 1, 1))


def test_checkpoint_without_semantic_seg_conv_keeps_its_initialisation(tmp_path, caplog):
    """A reference checkpoint without the conv, into a config that trains it: our checkpointer
    says so at INFO (no missing-key warning) and the conv keeps its initialisation."""
    source = synthetic_checkpoint("yolact_resnet50")
    del source["semantic_seg_conv.weight"], source["semantic_seg_conv.bias"]
    dst = str(tmp_path / "r50.pth")
    convert_yolact_checkpoint(save(source, tmp_path / "yolact_resnet50_1_2.pth"), dst)
    model = build_model(get_config("yolact_R_50_FPN_550.yaml"))
    fill_model(model, -1)
    with caplog.at_level(logging.INFO, logger="fvcore.common.checkpoint"):
        YolactCheckpointer(model).load(dst)
    logged = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "fvcore.common.checkpoint" and "Loading from" not in r.getMessage()
    ]
    assert logged == [
        (
            logging.INFO,
            "The checkpoint has no mask_branch.semantic_seg_conv (it only trains the semantic "
            "segmentation loss); it keeps its initialisation.",
        )
    ]
    assert bool((model.mask_branch.semantic_seg_conv.weight == -1).all())
    assert_weights_landed_except_semantic_seg(model, source)


def assert_weights_landed_except_semantic_seg(model, source):
    model_sd = model.state_dict()
    targets = {expected_target(k, False): v for k, v in source.items()}
    assert set(targets) == {k for k in model_sd if "semantic_seg_conv" not in k}
    assert all(torch.equal(model_sd[k], v) for k, v in targets.items())


# ------------------------------------------------------------------------------------------------
# Detection details (no model built)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "filename,expected",
    [
        ("yolact_im700_54_800000.pth", "yolact_im700"),
        ("/some/dir/yolact_im400_53_700000.pth", "yolact_im400"),
        ("yolact_base_54_800000.pth", "yolact_base"),
    ],
)
def test_r101_variant_from_file_name(filename, expected):
    arch = detect_architecture(synthetic_checkpoint("yolact_base"), filename=filename)
    assert arch.name == expected and arch.alternatives == ()
    assert arch.config_file == f"configs/{CONFIG_OF[expected]}"


@pytest.mark.parametrize("filename", [None, "weights.pth", "yolact_im4000.pth"])
def test_r101_variant_ambiguous(filename):
    arch = detect_architecture(synthetic_checkpoint("yolact_im700"), filename=filename)
    assert arch.name == "yolact_base"
    assert arch.alternatives == ("yolact_im400", "yolact_im700")
    assert arch.description == (
        "yolact_base (or im400/im700: same weights layout; pick the config by input size)"
    )
    assert arch.config_file == "configs/yolact_R_101_FPN_550.yaml"


def with_num_classes(source, num_classes, num_priors):
    """A copy of ``source`` retrained for another number of classes."""
    out = OrderedDict(source)
    for key, rows in [
        ("prediction_layers.0.conf_layer", num_priors * (num_classes + 1)),
        ("semantic_seg_conv", num_classes),
        ("maskiou_net.maskiou_net.10", num_classes),
    ]:
        for param in ("weight", "bias"):
            if f"{key}.{param}" in out:
                shape = out[f"{key}.{param}"].shape
                out[f"{key}.{param}"] = torch.zeros((rows,) + tuple(shape[1:]))
    return out


@pytest.mark.parametrize("name,num_priors", [("yolact_resnet50", 3), ("yolact_plus_base", 9)])
def test_num_classes_from_shapes(name, num_priors):
    source = with_num_classes(synthetic_checkpoint(name), 20, num_priors)
    arch = detect_architecture(source)
    assert (arch.name, arch.num_classes, arch.num_prototypes) == (name, 20, 32)


def test_checkpoint_without_semantic_seg_conv_is_accepted():
    source = synthetic_checkpoint("yolact_darknet53")
    del source["semantic_seg_conv.weight"], source["semantic_seg_conv.bias"]
    assert detect_architecture(source).name == "yolact_darknet53"
    assert len(convert_state_dict(source)) == len(source)


def test_legacy_keys_are_dropped(caplog):
    source = synthetic_checkpoint("yolact_resnet50")
    source["backbone.layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    source["fpn.downsample_layers.2.weight"] = torch.zeros(256, 256, 3, 3)
    source["fpn.downsample_layers.2.bias"] = torch.zeros(256)
    with caplog.at_level(logging.INFO, logger="yolact_d2.checkpoint"):
        converted = convert_state_dict(source)
    assert len(converted) == len(source) - 3
    assert "backbone.top_block.p6.weight" in converted
    assert not any("p8" in k or "layer1" in k for k in converted)
    assert "Dropped 3 legacy key(s)" in caplog.text


def test_wrapped_state_dict_is_accepted(tmp_path):
    source = synthetic_checkpoint("yolact_resnet50")
    for wrapper in ("model", "state_dict"):
        src = save({wrapper: source, "iteration": 5}, tmp_path / f"{wrapper}.pth")
        dst = str(tmp_path / f"{wrapper}_out.pth")
        assert convert_yolact_checkpoint(src, dst).name == "yolact_resnet50"
        assert len(torch.load(dst, weights_only=True)["model"]) == len(source)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def load_cli():
    return load_script(os.path.relpath(CLI, REPO_ROOT))


def run_cli(*args):
    return subprocess.run(
        [sys.executable, CLI, *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True
    )


def test_cli_end_to_end(tmp_path):
    src = save(
        synthetic_checkpoint("yolact_plus_resnet50"), tmp_path / "yolact_plus_resnet50_1.pth"
    )
    dst = tmp_path / "out" / "plus_r50.pth"
    result = run_cli(src, dst)
    assert result.returncode == 0, result.stderr
    assert "Architecture: yolact_plus_resnet50" in result.stdout
    assert "Config: configs/yolact_plus_R_50_FPN_550.yaml" in result.stdout
    assert "Traceback" not in result.stderr
    assert len(torch.load(str(dst), weights_only=True)["model"]) == 405


def test_cli_reports_ambiguous_r101_and_custom_classes(tmp_path, capsys):
    source = with_num_classes(synthetic_checkpoint("yolact_base"), 20, 3)
    src = save(source, tmp_path / "my_voc_model.pth")
    assert load_cli().main([src, str(tmp_path / "out.pth")]) == 0
    out = capsys.readouterr().out
    assert "yolact_base (or im400/im700: same weights layout" in out
    assert "MODEL.YOLACT.NUM_CLASSES 20" in out


def torchvision_resnet50_state_dict():
    from torchvision.models import resnet50

    return {k: constant(0, v.shape, v.dtype) for k, v in resnet50().state_dict().items()}


def converted_checkpoint(tmp_path):
    source = synthetic_checkpoint("yolact_resnet50")
    arch = detect_architecture(source)
    path = str(tmp_path / "already_converted.pth")
    save_converted_checkpoint(convert_state_dict(source, arch), arch, path)
    return path


def removed_key(tmp_path):
    source = synthetic_checkpoint("yolact_resnet50")
    del source["backbone.layers.2.3.bn2.running_var"]
    return save(source, tmp_path / "yolact_resnet50_removed.pth")


def wrong_shape(tmp_path):
    source = synthetic_checkpoint("yolact_resnet50")
    source["fpn.lat_layers.0.weight"] = torch.zeros(256, 1024, 1, 1)
    return save(source, tmp_path / "yolact_resnet50_shape.pth")


def truncated(tmp_path):
    data = open(save(synthetic_checkpoint("yolact_resnet50"), tmp_path / "full.pth"), "rb").read()
    path = tmp_path / "yolact_resnet50_54_800000.pth"
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def text_file(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    return str(path)


# (builder of the bad source, phrases the error message must contain)
BAD_INPUTS = {
    "missing": (lambda tmp: str(tmp / "nope.pth"), ["nope.pth", "does not exist"]),
    "truncated": (truncated, ["yolact_resnet50_54_800000.pth", "truncated or corrupt"]),
    "text": (text_file, ["notes.pth", "Cannot read"]),
    "list": (lambda tmp: save([1, 2, 3], tmp / "list.pth"), ["not a model checkpoint", "list"]),
    "strings": (
        lambda tmp: save({"a": "b"}, tmp / "strings.pth"),
        ["not a model checkpoint", "'a' (str)"],
    ),
    "torchvision": (
        lambda tmp: save(torchvision_resnet50_state_dict(), tmp / "resnet50-0676ba61.pth"),
        ["is not a checkpoint of the reference YOLACT", "Its keys: conv1.weight"],
    ),
    "detectron2": (converted_checkpoint, ["already converted", "Its keys: backbone.bottom_up."]),
    "removed_key": (
        removed_key,
        ["Closest: yolact_resnet50", "1 key(s) missing: backbone.layers.2.3.bn2.running_var"],
    ),
    "wrong_shape": (
        wrong_shape,
        [
            "Closest: yolact_resnet50",
            "fpn.lat_layers.0.weight (256, 1024, 1, 1) (expected (256, 2048, 1, 1))",
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_cli_rejects_bad_input(case, tmp_path, capsys):
    make_source, phrases = BAD_INPUTS[case]
    src = make_source(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dst = out_dir / "new.pth"
    assert load_cli().main([src, str(dst)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    for phrase in phrases:
        assert phrase in err
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize("case", ["truncated", "removed_key"])
def test_failed_conversion_keeps_existing_destination(case, tmp_path):
    src = BAD_INPUTS[case][0](tmp_path)
    dst = tmp_path / "out" / "existing.pth"
    dst.parent.mkdir()
    dst.write_bytes(b"previous conversion")
    with pytest.raises(ValueError):
        convert_yolact_checkpoint(src, str(dst))
    assert dst.read_bytes() == b"previous conversion"
    assert os.listdir(dst.parent) == ["existing.pth"]


def test_cli_subprocess_bad_input_has_no_traceback(tmp_path):
    dst = tmp_path / "existing.pth"
    dst.write_bytes(b"keep me")
    result = run_cli(truncated(tmp_path), dst)
    assert result.returncode == 1
    assert "error: Cannot read" in result.stderr and "Traceback" not in result.stderr
    assert dst.read_bytes() == b"keep me"


def test_output_written_atomically_over_existing_file(tmp_path):
    src = save(synthetic_checkpoint("yolact_resnet50"), tmp_path / "yolact_resnet50_1_1.pth")
    dst = tmp_path / "out.pth"
    dst.write_bytes(b"old")
    convert_yolact_checkpoint(src, str(dst))
    assert torch.load(str(dst), weights_only=True)["yolact_architecture"] == "yolact_resnet50"
    assert sorted(os.listdir(tmp_path)) == ["out.pth", "yolact_resnet50_1_1.pth"]


def test_pkl_destination_is_rejected(tmp_path):
    src = save(synthetic_checkpoint("yolact_resnet50"), tmp_path / "src.pth")
    with pytest.raises(ValueError, match=r"\.pth"):
        convert_yolact_checkpoint(src, str(tmp_path / "out.pkl"))
    assert not (tmp_path / "out.pkl").exists()


# ------------------------------------------------------------------------------------------------
# ImageNet backbone files, as the reference's configs name them (MODEL.WEIGHTS of each config)
# ------------------------------------------------------------------------------------------------
def numbered(state_dict):
    """The same keys and shapes, the i-th tensor filled with i + 1."""
    return OrderedDict(
        (k, constant(i + 1, v.shape, v.dtype).clone())
        for i, (k, v) in enumerate(state_dict.items())
    )


def torchvision_resnet_file(depth, num_batches_tracked, fc_outputs):
    """
    torchvision's ResNet names and shapes. The 2017 files (resnet50-19c8e357.pth,
    resnet101-5d3b4d8f.pth) predate BatchNorm's num_batches_tracked; the classifier's size does
    not matter (the reference's resnet101_reducedfc.pth has a smaller one).
    """
    import torchvision

    net = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=fc_outputs)
    state = net.state_dict()
    if not num_batches_tracked:
        state = OrderedDict((k, v) for k, v in state.items() if "num_batches_tracked" not in k)
    return numbered(state)


def torchvision_to_reference(key):
    """The reference's init_backbone renaming (layerN. -> layers.N-1.), under "backbone."."""
    match = re.match(r"layer(\d)\.(.*)", key)
    return "backbone." + (f"layers.{int(match[1]) - 1}.{match[2]}" if match else key)


def darknet53_file():
    """The reference's darknet53.pth: its DarkNetBackbone names (the yolact_darknet53 backbone
    keys without "backbone.")."""
    keys = read_reference_keys("yolact_darknet53")
    return OrderedDict(
        (k[len("backbone.") :], constant(i + 1, shape, torch.float32).clone())
        for i, (k, shape) in enumerate(keys.items())
        if k.startswith("backbone.")
    )


def assert_backbone_loaded(model, source, to_reference, darknet, untouched_value):
    model_sd = model.state_dict()
    loaded = {}
    for key, value in source.items():
        if key.startswith("fc."):
            continue
        target = expected_target(to_reference(key), darknet)
        assert torch.equal(model_sd[target], value.to(model_sd[target].dtype)), (key, target)
        loaded[target] = key
    bottom_up = {k for k in model_sd if k.startswith("backbone.bottom_up.")}
    # Every backbone tensor came from the file, but what ImageNet files do not have: the
    # counters the 2017 files predate and YOLACT++'s DCN offsets and biases (initialised by the
    # model: zero offsets, zero bias, as the reference).
    not_in_file = {
        k
        for k in bottom_up - set(loaded)
        if "num_batches_tracked" in k or ".conv_offset_mask." in k or k.endswith("conv2.bias")
    }
    assert bottom_up - set(loaded) == not_in_file
    # Nothing outside the backbone was touched.
    others = [k for k in model_sd if not k.startswith("backbone.bottom_up.")]
    assert others and all(bool((model_sd[k] == untouched_value).all()) for k in others)


@pytest.mark.parametrize(
    "filename, config, depth, num_batches_tracked, fc_outputs",
    [
        ("resnet50-19c8e357.pth", "yolact_R_50_FPN_550.yaml", 50, False, 1000),
        ("resnet101-5d3b4d8f.pth", "yolact_R_101_FPN_550.yaml", 101, False, 1000),
        ("resnet101_reducedfc.pth", "yolact_R_101_FPN_550.yaml", 101, True, 10),
        ("resnet50-19c8e357.pth", "yolact_plus_R_50_FPN_550.yaml", 50, False, 1000),
    ],
)
def test_reference_resnet_backbone_files(
    filename, config, depth, num_batches_tracked, fc_outputs, tmp_path, caplog
):
    source = torchvision_resnet_file(depth, num_batches_tracked, fc_outputs)
    path = save(source, tmp_path / filename)
    model = build_model(get_config(config, ["MODEL.YOLACT.INPUT_SIZE", 256]))
    fill_model(model, -1)
    with caplog.at_level(logging.INFO):
        YolactCheckpointer(model).load(path)
    assert "torchvision ResNet ImageNet weights" in caplog.text
    assert "fc.weight" in caplog.text  # reported as dropped
    assert_backbone_loaded(model, source, torchvision_to_reference, False, -1)


def test_reference_darknet53_file(tmp_path, caplog):
    source = darknet53_file()
    path = save(source, tmp_path / "darknet53.pth")
    model = build_model(get_config("yolact_DarkNet53_FPN_550.yaml"))
    fill_model(model, -1)
    with caplog.at_level(logging.INFO):
        YolactCheckpointer(model).load(path)
    assert "DarkNet-53 ImageNet weights" in caplog.text
    assert_backbone_loaded(model, source, lambda k: "backbone." + k, True, -1)


def test_backbone_file_of_another_backbone_is_an_error(tmp_path):
    path = save(darknet53_file(), tmp_path / "darknet53.pth")
    model = build_model(get_config("yolact_R_50_FPN_550.yaml", ["MODEL.YOLACT.INPUT_SIZE", 128]))
    with pytest.raises(ValueError, match=r"darknet53\.pth.*DarkNet-53.*MODEL\.BACKBONE\.NAME"):
        YolactCheckpointer(model).load(path)


@pytest.mark.parametrize("config", sorted({**V1_CONFIGS, **PLUS_CONFIGS}))
def test_configs_name_their_imagenet_backbone(config):
    from yolact_d2.config import get_yolact_cfg

    cfg = get_yolact_cfg()
    cfg.merge_from_file(os.path.join(REPO_ROOT, "configs", config))
    assert cfg.MODEL.YOLACT.PRETRAINED_RECIPE
    if "DarkNet" in config:
        assert cfg.MODEL.WEIGHTS == "darknet53.pth"
    else:
        depth = cfg.MODEL.RESNETS.DEPTH
        assert re.fullmatch(
            rf"https://download\.pytorch\.org/models/resnet{depth}-[0-9a-f]{{8}}\.pth",
            cfg.MODEL.WEIGHTS,
        ), cfg.MODEL.WEIGHTS


def test_backbone_url_loads_from_the_cache(tmp_path, monkeypatch, caplog):
    """An offline cluster: the file put where Detectron2's PathManager caches the config's URL
    ($FVCORE_CACHE/<url path>) is used, and nothing is downloaded."""
    from urllib.parse import urlparse

    from yolact_d2.config import get_yolact_cfg

    cfg = get_yolact_cfg()
    cfg.merge_from_file(os.path.join(REPO_ROOT, "configs", "yolact_R_50_FPN_550.yaml"))
    url = cfg.MODEL.WEIGHTS
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path))
    cached = tmp_path / urlparse(url).path.lstrip("/")
    cached.parent.mkdir(parents=True)
    source = torchvision_resnet_file(50, False, 1000)
    save(source, cached)
    model = build_model(get_config("yolact_R_50_FPN_550.yaml", ["MODEL.YOLACT.INPUT_SIZE", 128]))
    fill_model(model, -1)
    with caplog.at_level(logging.INFO):
        YolactCheckpointer(model).load(url)
    assert "Downloading" not in caplog.text
    assert_backbone_loaded(model, source, torchvision_to_reference, False, -1)


@pytest.mark.parametrize("name", sorted(CONFIG_OF))
def test_expected_keys_come_from_the_model_in_reference_names(name):
    """The converter's expected keys are the model's, named back to the reference's: exactly the
    reference key list, shapes included, and each renames forward to the model key it came from."""
    from yolact_d2.checkpoint.architecture import LAYOUTS, expected_keys

    arch_source = synthetic_checkpoint(name)
    layout = next(lay for lay in LAYOUTS if name in dict(lay.variants))
    expected = expected_keys(layout, 80, 32, True)
    assert expected == dict(read_reference_keys(name))
    model_keys = build_model(get_config(CONFIG_OF[name])).state_dict().keys()
    assert {yolact_d2_key(k, layout.backbone_type) for k in expected} == set(model_keys)
    assert len(arch_source) == len(expected)


@pytest.mark.parametrize("name", sorted(CONFIG_OF))
def test_model_weights_in_reference_names(name):
    """to_reference_state_dict (what the benchmark gives the original implementation) is the
    exact inverse of the conversion: a model's state dict comes out with the reference's keys
    and shapes, the same tensors, and converts back to the model's keys."""
    from yolact_d2.checkpoint import reference_config_name

    found = reference_config_name(f"configs/{CONFIG_OF[name]}")
    assert found == (name, "darknet" if "darknet" in name else "resnet")
    model = build_model(get_config(CONFIG_OF[name]))
    state = model.state_dict()
    reference = to_reference_state_dict(state, found[1])
    assert {k: tuple(v.shape) for k, v in reference.items()} == dict(read_reference_keys(name))
    assert all(reference[r] is state[k] for r, k in zip(reference, state))
    back = convert_state_dict(reference)
    assert list(back) == list(state)


def test_reference_names_errors():
    from yolact_d2.checkpoint import reference_config_name

    assert reference_config_name("configs/demo/yolact_R_18_synthetic.yaml") is None
    with pytest.raises(ValueError, match="backbone_type"):
        to_reference_state_dict({}, "vgg")
    with pytest.raises(ValueError, match="No reference name"):
        to_reference_state_dict({"not_a_yolact_key.weight": torch.zeros(1)}, "resnet")
