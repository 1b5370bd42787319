# Copyright (c) yolact_d2 contributors.
"""
The training step: bf16 on CPU, channels_last, AMP, skipped non-finite steps, total-norm
clipping.
"""

import numpy as np
import os
import tempfile
import unittest
import warnings

import pytest
import torch
from torch import nn

from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from yolact_d2.checkpoint.checkpointer import YolactCheckpointer
from yolact_d2.engine import (
    YolactAMPTrainer,
    YolactSimpleTrainer,
    YolactTrainer,
    full_model_max_grad_norm,
)

from training import ENGINE_LOGGER, tiny_cfg, train


class TestPrecisionAndSteps(unittest.TestCase):
    def test_bf16_step_on_cpu(self):
        with tempfile.TemporaryDirectory() as out:
            trainer = YolactTrainer(tiny_cfg(out, ["SOLVER.BF16_CPU", True, "SOLVER.MAX_ITER", 1]))
            self.assertIsInstance(trainer._trainer, YolactSimpleTrainer)
            self.assertTrue(trainer._trainer.bf16_cpu)
            dtypes = []
            trainer.model.backbone.register_forward_hook(
                lambda module, inputs, outputs: dtypes.append(outputs["p3"].dtype)
            )
            before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
            trainer.train()
        self.assertEqual(dtypes, [torch.bfloat16])
        self.assertTrue(np.isfinite(trainer.storage.history("total_loss").latest()))
        changed = [k for k, v in trainer.model.named_parameters() if not torch.equal(v, before[k])]
        self.assertGreater(len(changed), 0)

    def test_channels_last_training(self):
        losses = {}
        for channels_last in (False, True):
            with tempfile.TemporaryDirectory() as out:
                cfg = tiny_cfg(out, ["SOLVER.CHANNELS_LAST", channels_last, "SOLVER.MAX_ITER", 2])
                trainer = train(cfg)
                conv = trainer.model.backbone.bottom_up.res3[0].conv1.weight
                self.assertEqual(
                    conv.is_contiguous(memory_format=torch.channels_last)
                    and not conv.is_contiguous(),
                    channels_last,
                )
                losses[channels_last] = [
                    v for v, _ in trainer.storage.history("total_loss").values()
                ]
                # The checkpoint loads into a default (NCHW) model with the same values.
                model = build_model(tiny_cfg())
                YolactCheckpointer(model).load(os.path.join(out, "model_final.pth"))
                trained = trainer.model.state_dict()
                for key, value in model.state_dict().items():
                    self.assertTrue(value.is_contiguous(), key)
                    self.assertTrue(torch.equal(value, trained[key]), key)
        # Same maths, other summation order: equal to float precision, not bit for bit. The
        # first loss comes from the same weights; the second after one step of each (where
        # hard negative mining may already pick a few other negatives).
        np.testing.assert_allclose(losses[True][0], losses[False][0], rtol=1e-5)
        np.testing.assert_allclose(losses[True][1], losses[False][1], rtol=1e-3)

    def run_toy_steps(self, trainer_class, grad_scaler=None):
        """A NaN, an inf and a finite loss: two skipped steps, then one SGD step (lr 0.1)."""

        class Toy(nn.Module):
            def __init__(self):
                super().__init__()
                self.weight = nn.Parameter(torch.ones(3))

            def forward(self, scale):
                return {"loss_a": (self.weight * scale[0]).sum(), "loss_b": self.weight.sum() * 0}

        model = Toy()
        data = iter([[float("nan")], [float("inf")], [1.0]])
        trainer = trainer_class(model, data, torch.optim.SGD(model.parameters(), lr=0.1))
        if grad_scaler is not None:
            trainer.grad_scaler = grad_scaler
        with EventStorage() as storage:
            for it in range(2):
                trainer.iter = storage.iter = it
                with self.assertLogs(ENGINE_LOGGER, "WARNING"):
                    trainer.run_step()
                self.assertTrue(torch.equal(model.weight.detach(), torch.ones(3)))
            self.assertEqual(trainer.num_skipped_steps, 2)
            self.assertEqual(storage.history("skipped_steps").latest(), 2)
            trainer.iter = storage.iter = 2
            trainer.run_step()
        self.assertTrue(torch.allclose(model.weight.detach(), torch.full((3,), 0.9)))
        return trainer

    def test_non_finite_loss_skips_the_step(self):
        self.run_toy_steps(YolactSimpleTrainer)

    def test_amp_trainer_skips_and_checkpoints_its_scaler(self):
        # A real (CPU) gradient scaler in the AMP step: the loss is scaled by 8 for backward,
        # the step unscales it (the weights move by exactly lr * 1), skipped steps leave the
        # scale alone, and the scaler's state is checkpointed with the trainer.
        scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # CUDA autocast is disabled without CUDA
            trainer = self.run_toy_steps(YolactAMPTrainer, grad_scaler=scaler)
        self.assertTrue(scaler.is_enabled())
        self.assertEqual(scaler.get_scale(), 8.0)
        state = trainer.state_dict()
        self.assertEqual(state["grad_scaler"]["scale"], 8.0)
        self.assertIn("optimizer", state)

    @pytest.mark.cuda
    @unittest.skipIf(not torch.cuda.is_available(), "AMP needs CUDA")
    def test_amp_step_on_cuda(self):
        opts = ["SOLVER.AMP.ENABLED", True, "SOLVER.MAX_ITER", 1, "MODEL.DEVICE", "cuda"]
        with tempfile.TemporaryDirectory() as out:
            trainer = YolactTrainer(tiny_cfg(out, opts))
            trainer.train()
        self.assertTrue(np.isfinite(trainer.storage.history("total_loss").latest()))

    def test_full_model_gradient_clipping(self):
        # loss = 3 w0 + 4 w1 (+ 0 * w2): gradient (3, 4, 0), total norm 5, clipped to 1 ->
        # (0.6, 0.8, 0); with plain SGD at lr 1 the weights move by exactly that.
        class Linear(nn.Module):
            def __init__(self):
                super().__init__()
                self.weight = nn.Parameter(torch.zeros(2))
                self.other = nn.Parameter(torch.zeros(1))

            def forward(self, data):
                return {"loss": (self.weight * torch.tensor(data)).sum() + 0 * self.other.sum()}

        for trainer_class in (YolactSimpleTrainer, YolactAMPTrainer):
            model = Linear()
            optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the disabled gradient scaler without CUDA
                trainer = trainer_class(model, iter([[3.0, 4.0]]), optimizer, max_grad_norm=1.0)
                with EventStorage() as storage:
                    trainer.run_step()
            self.assertAlmostEqual(storage.history("grad_norm").latest(), 5.0, places=5)
            self.assertTrue(torch.allclose(model.weight.detach(), torch.tensor([-0.6, -0.8])))
            self.assertEqual(float(model.other.detach()), 0.0)

    def test_full_model_clipping_from_config(self):
        opts = [
            "SOLVER.CLIP_GRADIENTS.ENABLED", True,
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full_model",
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 0.5,
            "SOLVER.MAX_ITER", 1,
        ]  # fmt: skip
        with tempfile.TemporaryDirectory() as out:
            trainer = YolactTrainer(tiny_cfg(out, opts))
            self.assertEqual(trainer._trainer.max_grad_norm, 0.5)
            # the optimizer itself is not wrapped by Detectron2's per-parameter clipping
            self.assertIs(type(trainer.optimizer), torch.optim.SGD)
            trainer.train()
        self.assertGreater(trainer.storage.history("grad_norm").latest(), 0.5)
        bad = tiny_cfg(opts=opts + ["SOLVER.CLIP_GRADIENTS.NORM_TYPE", 1.0])
        with self.assertRaisesRegex(ValueError, "NORM_TYPE"):
            full_model_max_grad_norm(bad)
        bad = tiny_cfg(opts=opts + ["SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 0.0])
        with self.assertRaisesRegex(ValueError, "CLIP_VALUE"):
            full_model_max_grad_norm(bad)

    def test_amp_on_cpu_is_rejected(self):
        with self.assertRaisesRegex(ValueError, "BF16_CPU"):
            YolactTrainer(tiny_cfg(opts=["SOLVER.AMP.ENABLED", True]))
