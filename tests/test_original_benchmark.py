# Copyright (c) yolact_d2 contributors.
"""
The original implementation as a benchmark row (yolact_d2.benchmark.original): its config for
ours, the weights it is given, the parity check of its detections, and the failures it reports.
The original itself (a dbolya/yolact checkout) is not part of this project, so these tests run
without it: the parity check is fed detections in the child's own JSON format.
"""

import pytest
import torch

from yolact_d2.benchmark import (
    build_predictor,
    calibrate_detections,
    dataset_image_files,
    default_image_dir,
    image_files,
    load_images,
)
from yolact_d2.benchmark.original import (
    check_original_repo,
    original_config,
    parity_with_original,
    run_original,
)
from yolact_d2.benchmark.original_worker import _cpu_shims, _detections

from common import get_config


def test_original_config_of_our_configs():
    config = original_config("yolact_R_50_FPN_550.yaml", get_config("yolact_R_50_FPN_550.yaml"))
    assert config["name"] == "yolact_resnet50_config" and config["backbone_type"] == "resnet"
    assert config["overrides"] == {
        "max_size": 550,
        "num_classes": 81,
        "nms_top_k": 200,
        "nms_conf_thresh": 0.05,
        "nms_thresh": 0.5,
        "max_num_detections": 100,
    }
    assert config["pred_scales"] == [[24.0], [48.0], [96.0], [192.0], [384.0]]
    # A config derived from a reference one finds it through _BASE_ and keeps its input size.
    overfit = "tiny_coco/yolact_R_50_FPN_overfit8.yaml"
    config = original_config(overfit, get_config(overfit))
    assert config["name"] == "yolact_resnet50_config" and config["overrides"]["max_size"] == 320
    darknet = "yolact_DarkNet53_FPN_550.yaml"
    assert original_config(darknet, get_config(darknet))["backbone_type"] == "darknet"
    demo = "demo/yolact_R_18_synthetic.yaml"
    assert original_config(demo, get_config(demo)) is None  # no R-18 in the original


def test_original_repo_is_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkout of dbolya/yolact.*yolact.py"):
        check_original_repo(str(tmp_path))


def test_a_failing_original_is_reported_with_its_error(tmp_path):
    """The child's failure comes back with its stderr; the weights it was given are the model's
    in the reference's names."""
    repo = tmp_path / "repo"
    for name in ("yolact.py", "eval.py", "data/config.py", "data/__init__.py"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("")
    cfg = get_config("yolact_R_50_FPN_550.yaml")
    config = original_config("yolact_R_50_FPN_550.yaml", cfg)
    predictor = build_predictor("yolact_R_50_FPN_550.yaml")
    files = image_files(default_image_dir(), 1)
    work = tmp_path / "work"
    with pytest.raises(
        RuntimeError, match="(?s)failed \\(exit 1\\).*ImportError: cannot import name .cfg."
    ):
        run_original(str(check_original_repo(str(repo))), config, predictor.model, files, 1, 0,
                     1, str(work))  # fmt: skip
    weights = torch.load(work / "yolact_resnet50_config_weights.pth", weights_only=True)
    ours = predictor.model.state_dict()
    assert len(weights) == len(ours)
    assert torch.equal(
        weights["backbone.layers.0.0.conv1.weight"], ours["backbone.bottom_up.res2.0.conv1.weight"]
    )
    assert "fpn.lat_layers.0.weight" in weights and "proto_net.0.weight" in weights


def test_parity_with_the_originals_detections():
    """Detections written in the child's format (pixel boxes truncated to integers, as the
    original returns them; RLE masks) are the same detections; a score off by more than 2e-3
    is not."""
    predictor = build_predictor("yolact_R_50_FPN_550.yaml", opts=["MODEL.YOLACT.INPUT_SIZE", 192])
    training = load_images(dataset_image_files("tiny_coco_train", 2))
    calibrate_detections(predictor.model, [bgr[:, :, ::-1].copy() for bgr in training])
    images = load_images(image_files(default_image_dir(), 2))
    ours = [predictor(image)["instances"] for image in images]
    report = {"detections": []}
    for instances in ours:
        report["detections"].append(
            _detections(
                instances.pred_classes,
                instances.scores,
                instances.pred_boxes.tensor.long(),
                instances.pred_masks.float(),
            )
        )
    agreement = parity_with_original(report, ours)
    assert agreement.num_reference == sum(len(i) for i in ours) > 50
    assert agreement.one_to_one_fraction == 1.0 and agreement.mean_iou == 1.0
    report["detections"][0]["scores"] = [s + 0.01 for s in report["detections"][0]["scores"]]
    shifted = parity_with_original(report, ours)
    assert shifted.one_to_one_fraction == pytest.approx(len(ours[1]) / agreement.num_reference)


def test_cpu_shims_are_undone():
    before = (torch.cuda.current_device, torch.cuda.device_count, torch.Tensor.cuda)
    with _cpu_shims(import_time=True):
        assert torch.cuda.current_device() == 0 and torch.cuda.device_count() == 2
        x = torch.zeros(1)
        assert x.cuda() is x
    assert (torch.cuda.current_device, torch.cuda.device_count, torch.Tensor.cuda) == before
