# Copyright (c) yolact_d2 contributors.
"""The reference's BatchNorm rule (frozen below 6 images per BatchNorm) and its warnings."""

import tempfile
import unittest
from unittest import mock

import torch
from torch import nn

from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng

from yolact_d2.engine import YolactTrainer
from yolact_d2.engine.trainer import (
    apply_reference_batch_norm_rule,
    batch_norm_images_per_iteration,
    warn_if_untrained_start,
)
from yolact_d2.layers.batch_norm import EvalModeBatchNorm2d, freeze_batch_norm

from training import ENGINE_LOGGER, tiny_cfg


class TestReferenceBatchNormRule(unittest.TestCase):
    """The reference freezes BatchNorm below 6 images per GPU (FREEZE_BN_BELOW_BATCH)."""

    def test_images_per_batch_norm(self):
        cfg = tiny_cfg(opts=["SOLVER.IMS_PER_BATCH", 8])
        self.assertEqual(batch_norm_images_per_iteration(cfg, 1), 8)
        self.assertEqual(batch_norm_images_per_iteration(cfg, 2), 4)
        cfg.MODEL.RESNETS.NORM = "naiveSyncBN"  # statistics over all processes' images
        self.assertEqual(batch_norm_images_per_iteration(cfg, 2), 8)

    def test_small_batches_freeze_batch_norm_and_training_keeps_it_frozen(self):
        out = tempfile.TemporaryDirectory()
        self.addCleanup(out.cleanup)
        opts = ["MODEL.YOLACT.FREEZE_BN_BELOW_BATCH", 6, "SOLVER.MAX_ITER", 2]
        cfg = tiny_cfg(out.name, opts)
        seed_all_rng(0)
        with self.assertLogs(ENGINE_LOGGER, "WARNING") as logs:
            trainer = YolactTrainer(cfg)
        self.assertTrue(
            any("BatchNorm frozen in 20 layers" in m and "FREEZE_BN_BELOW_BATCH=6" in m
                for m in logs.output),
            logs.output,
        )  # fmt: skip
        model = trainer.model
        norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
        self.assertEqual(len(norms), 20)  # stem, 16 block convs, 3 shortcuts
        self.assertTrue(all(isinstance(m, EvalModeBatchNorm2d) for m in norms.values()))
        optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
        for m in norms.values():
            self.assertFalse(m.weight.requires_grad or m.bias.requires_grad)
            self.assertNotIn(id(m.weight), optimised)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        trainer.train()
        self.assertTrue(model.training)  # the trainer puts the model in training mode ...
        self.assertFalse(any(m.training for m in norms.values()))  # ... but not BatchNorm
        after = model.state_dict()
        for name in norms:
            for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                key = f"{name}.{suffix}"
                self.assertTrue(torch.equal(before[key], after[key]), key)
        convs = [k for k in after if k.endswith("conv1.weight")]
        self.assertTrue(all(not torch.equal(before[k], after[k]) for k in convs))

    def test_large_enough_batches_and_zero_limit_train_batch_norm(self):
        for opts in (["MODEL.YOLACT.FREEZE_BN_BELOW_BATCH", 2], ["SOLVER.IMS_PER_BATCH", 2]):
            cfg = tiny_cfg(opts=opts + ["SOLVER.MAX_ITER", 1])
            model = build_model(cfg)
            self.assertEqual(apply_reference_batch_norm_rule(cfg, model, 1), [])
            norm = model.backbone.bottom_up.stem.conv1.norm
            self.assertIs(type(norm), nn.BatchNorm2d)
            self.assertTrue(norm.weight.requires_grad)
            model.train()
            self.assertTrue(norm.training)

    def test_frozen_batch_norm_is_eval_batch_norm_exactly(self):
        torch.manual_seed(0)
        norm = nn.BatchNorm2d(8)
        with torch.no_grad():
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.normal_()
            norm.bias.normal_()
        x = torch.randn(2, 8, 5, 5)
        expected = norm.eval()(x)
        module = nn.Sequential(norm, nn.SyncBatchNorm(8))
        self.assertEqual(freeze_batch_norm(module), ["0", "1"])
        self.assertIsInstance(module[1], EvalModeBatchNorm2d)
        module = module[:1]
        module.train()
        self.assertTrue(torch.equal(module(x), expected))
        self.assertEqual(set(norm.state_dict()), set(nn.BatchNorm2d(8).state_dict()))

    def test_pytorch_sync_batch_norm_on_cpu_processes_is_a_clear_error(self):
        cfg = tiny_cfg(opts=["MODEL.RESNETS.NORM", "SyncBN"])
        model = build_model(cfg)
        with mock.patch("yolact_d2.engine.trainer.comm.get_world_size", return_value=2):
            with self.assertRaisesRegex(ValueError, "SyncBN.*needs CUDA.*naiveSyncBN"):
                YolactTrainer.build_ddp_model(cfg, model)

    def test_warning_for_random_weights_with_a_pretrained_recipe(self):
        cfg = tiny_cfg(opts=["MODEL.YOLACT.PRETRAINED_RECIPE", True])
        with self.assertLogs(ENGINE_LOGGER, "WARNING") as logs:
            self.assertTrue(warn_if_untrained_start(cfg))
        self.assertEqual(len(logs.output), 1)
        self.assertIn("MODEL.WEIGHTS is empty", logs.output[0])
        self.assertIn("yolact_R_50_FPN_550_scratch.yaml", logs.output[0])
        self.assertFalse(warn_if_untrained_start(tiny_cfg()))  # a from-scratch recipe
        cfg.MODEL.WEIGHTS = "backbone.pth"
        self.assertFalse(warn_if_untrained_start(cfg))
