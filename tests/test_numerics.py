# Copyright (c) yolact_d2 contributors.
"""
Numeric trouble (issue 12): a non-finite loss skips the step and leaves the model exactly as it
was (BatchNorm statistics included), too many in a row stop training with a clear error, a
checkpoint holding NaN or Inf is never written, and the fast CPU path stays finite on extreme
inputs.
"""

import copy
import numpy as np
import os

import pytest
import torch

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from yolact_d2.checkpoint.checkpointer import YolactCheckpointer, non_finite_entries
from yolact_d2.data import YolactDatasetMapper
from yolact_d2.engine import YolactSimpleTrainer, YolactTrainer

from common import calibrate_batch_norm, get_config

OPTS = [
    "MODEL.YOLACT.INPUT_SIZE", 160,
    "MODEL.YOLACT.FREEZE_BN_BELOW_BATCH", 0,
    "INPUT.YOLACT.PHOTOMETRIC", False,
    "INPUT.YOLACT.EXPAND", False,
    "INPUT.YOLACT.RANDOM_SAMPLE_CROP", False,
    "INPUT.YOLACT.MIRROR", False,
]  # fmt: skip


@pytest.fixture(scope="module")
def batches():
    """(cfg, finite batch, batch whose loss is NaN): two tiny_coco train images each."""
    cfg = get_config("demo/yolact_R_18_synthetic.yaml", OPTS + ["MODEL.YOLACT.NUM_CLASSES", 80])
    mapper = YolactDatasetMapper(cfg, True)
    good = [mapper(record) for record in DatasetCatalog.get("tiny_coco_train")[:2]]
    bad = copy.deepcopy(good)
    bad[0]["image"] = bad[0]["image"].float()
    bad[0]["image"][:, 10:20, 10:20] = float("nan")  # a few NaN pixels poison the forward
    return cfg, good, bad


def _trainer(cfg, loader, max_nonfinite_steps=0):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    return YolactSimpleTrainer(
        model, iter(loader), optimizer, max_nonfinite_steps=max_nonfinite_steps
    )


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _run_steps(trainer, count):
    with EventStorage(0) as storage:
        for i in range(count):
            trainer.iter = storage.iter = i
            trainer.run_step()


def test_a_skipped_step_leaves_the_model_exactly_as_it_was(batches):
    cfg, good, bad = batches
    # The bad batch really poisons a train-mode forward: BatchNorm statistics become NaN.
    probe = _trainer(cfg, []).model
    with torch.no_grad():
        probe(bad)
    assert non_finite_entries(probe.state_dict()), "the NaN batch did not reach BatchNorm"

    trainer = _trainer(cfg, [bad, good])
    before = _state(trainer.model)
    _run_steps(trainer, 1)
    assert trainer.num_skipped_steps == 1
    after = _state(trainer.model)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key  # parameters and buffers
    assert not trainer.optimizer.state  # no step was taken
    with EventStorage(1):
        trainer.iter = 1
        trainer.run_step()  # the finite batch trains
    changed = [k for k in before if not torch.equal(before[k], trainer.model.state_dict()[k])]
    assert any("running_mean" in k for k in changed) and any("weight" in k for k in changed)
    assert trainer.consecutive_skipped_steps == 0


def test_consecutive_non_finite_steps_stop_training(batches):
    cfg, good, bad = batches
    trainer = _trainer(cfg, [bad, bad, good, bad, bad, bad], max_nonfinite_steps=3)
    _run_steps(trainer, 5)  # bad, bad, good (resets), bad, bad
    assert trainer.num_skipped_steps == 4 and trainer.consecutive_skipped_steps == 2
    with pytest.raises(FloatingPointError) as error:
        with EventStorage(5):
            trainer.iter = 5
            trainer.run_step()
    message = str(error.value)
    assert "iteration 5" in message and "3 consecutive" in message
    assert "SOLVER.MAX_NONFINITE_STEPS" in message and "loss_cls" in message


def test_the_config_sets_the_bound(batches):
    cfg, good, _ = batches
    cfg = cfg.clone()
    cfg.SOLVER.MAX_NONFINITE_STEPS = 7
    model = build_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    step = YolactTrainer.build_step_trainer(cfg, model, iter([good]), optimizer)
    assert step.max_nonfinite_steps == 7
    assert get_config("yolact_R_50_FPN_550.yaml").SOLVER.MAX_NONFINITE_STEPS == 20


def test_a_checkpoint_with_nan_or_inf_is_not_written(tmp_path, batches):
    cfg, _, _ = batches
    model = build_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    checkpointer = YolactCheckpointer(model, str(tmp_path), optimizer=optimizer)
    checkpointer.save("model_good")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_good.pth"]
    with torch.no_grad():
        model.head.cls_score.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"model/head\.cls_score\.weight"):
        checkpointer.save("model_bad")
    with torch.no_grad():
        model.head.cls_score.weight[0, 0, 0, 0] = 0.0
    optimizer.state[model.head.cls_score.weight]["momentum_buffer"] = torch.full((2,), float("inf"))
    with pytest.raises(FloatingPointError, match=r"optimizer/state/\d+/momentum_buffer"):
        checkpointer.save("model_bad")
    # nothing half-written, and the last good checkpoint is still the tagged one
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_good.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_good.pth"


def test_non_finite_entries_finds_nested_tensors():
    data = {
        "a": torch.zeros(3),
        "b": {"c": [torch.tensor([1.0, float("nan")]), torch.arange(3)]},
        "d": torch.tensor([float("-inf")]),
        "e": "text",
    }
    assert non_finite_entries(data) == ["b/c/0", "d"]


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_fast_cpu_path_stays_finite_on_extreme_inputs(dtype):
    opts = ["MODEL.YOLACT.FAST_CPU_INFERENCE", True, "MODEL.YOLACT.FAST_CPU_DTYPE", dtype]
    torch.manual_seed(0)
    model = build_model(get_config("yolact_R_50_FPN_550.yaml", opts)).eval()
    rng = np.random.default_rng(0)
    images = [
        np.zeros((120, 200, 3), np.uint8),
        np.full((200, 120, 3), 255, np.uint8),
        (rng.integers(0, 2, (64, 64, 3)) * 255).astype(np.uint8),  # 0/255 noise
        np.full((1, 1, 3), 255, np.uint8),
    ]
    calibrate_batch_norm(model, images[2])
    with torch.no_grad():  # extreme but finite logits and coefficients
        for conv in (model.head.cls_score, model.head.coefficients, model.head.bbox_pred):
            conv.weight.mul_(1e3)
    exact = copy.deepcopy(model)
    exact.fast_cpu_inference = False
    # In float32 the fast path's values equal the exact path's up to the folded BatchNorm's
    # rounding, relative to their largest (tanh'd coefficients are left out: 1e3-scaled pre-tanh
    # values make them a step function of that rounding). In bfloat16 only finiteness is
    # claimed: on these saturated and 0/255 images its 8-bit mantissa moves even the prototypes
    # by a quarter of their range (measured), and the 1e3-scaled heads 1000-fold more.
    compared = {
        "float32": {"class_logits": 1e-4, "box_deltas": 1e-4, "prototypes": 1e-4},
        "bfloat16": {},
    }[dtype]
    for image in images:
        tensor = torch.as_tensor(image).permute(2, 0, 1)
        with torch.no_grad():
            outputs = model.predict(model.preprocess_image([{"image": tensor}]))
            reference = exact.predict(exact.preprocess_image([{"image": tensor}]))
            for key in ("class_logits", "coefficients", "prototypes", "box_deltas"):
                assert torch.isfinite(outputs[key]).all(), (key, image.shape)
            for key, tolerance in compared.items():
                scale = float(reference[key].abs().max())
                torch.testing.assert_close(
                    outputs[key], reference[key], rtol=0, atol=tolerance * scale
                )
            out = model([{"image": tensor}])[0]["instances"]
        assert torch.isfinite(out.scores).all() and torch.isfinite(out.pred_boxes.tensor).all()
