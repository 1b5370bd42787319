# Copyright (c) yolact_d2 contributors.
"""The optimizer and schedule: the reference's SGD, AdamW, warm-up and steps, autoscaling."""

import unittest

import torch

from detectron2.modeling import build_model

from yolact_d2.engine import YolactTrainer, apply_yolact_autoscale

from common import get_config
from training import ENGINE_LOGGER, lr_schedule, tiny_cfg


class TestSolver(unittest.TestCase):
    def test_reference_optimizer(self):
        cfg = tiny_cfg()
        model = build_model(cfg)
        optimizer = YolactTrainer.build_optimizer(cfg, model)
        self.assertIsInstance(optimizer, torch.optim.SGD)
        self.assertEqual(len(optimizer.param_groups), 1)
        group = optimizer.param_groups[0]
        self.assertEqual(len(group["params"]), len(list(model.parameters())))
        self.assertEqual((group["lr"], group["momentum"], group["weight_decay"]), (1e-3, 0.9, 5e-4))

    def test_adamw(self):
        opts = [
            "SOLVER.OPTIMIZER", "adamw",
            "SOLVER.BASE_LR", 2e-3,
            "SOLVER.ADAM_BETAS", (0.8, 0.99),
            "SOLVER.WEIGHT_DECAY", 0.05,
            "SOLVER.WEIGHT_DECAY_NORM", 0.0,
        ]  # fmt: skip
        cfg = tiny_cfg(opts=opts)
        model = build_model(cfg)
        optimizer = YolactTrainer.build_optimizer(cfg, model)
        self.assertIs(type(optimizer), torch.optim.AdamW)
        decays = {}
        for group in optimizer.param_groups:
            self.assertEqual((group["lr"], group["betas"]), (2e-3, (0.8, 0.99)))
            for p in group["params"]:
                decays[id(p)] = group["weight_decay"]
        bn_weight = model.backbone.bottom_up.stem.conv1.norm.weight
        conv_weight = model.backbone.bottom_up.stem.conv1.weight
        self.assertEqual((decays[id(bn_weight)], decays[id(conv_weight)]), (0.0, 0.05))
        self.assertEqual(len(decays), len(list(model.parameters())))
        with self.assertRaisesRegex(ValueError, "SOLVER.OPTIMIZER='LAMB'"):
            YolactTrainer.build_optimizer(tiny_cfg(opts=["SOLVER.OPTIMIZER", "LAMB"]), model)

    def test_reference_warmup_and_steps(self):
        cfg = tiny_cfg(opts=["SOLVER.MAX_ITER", 1000, "SOLVER.STEPS", (700,)])
        lrs = lr_schedule(cfg)
        for it in (0, 100, 250, 499):  # the reference: (1e-3 - 1e-4) * it / 500 + 1e-4
            self.assertAlmostEqual(lrs[it], (1e-3 - 1e-4) * it / 500 + 1e-4, places=12)
        self.assertAlmostEqual(lrs[500], 1e-3, places=12)
        self.assertAlmostEqual(lrs[699], 1e-3, places=12)
        self.assertAlmostEqual(lrs[700], 1e-4, places=12)

    def test_yolact_autoscale(self):
        cfg = get_config("yolact_R_50_FPN_550.yaml")
        self.assertIs(apply_yolact_autoscale(cfg), cfg)  # off by default
        cfg.SOLVER.YOLACT_AUTOSCALE = True
        cfg.SOLVER.IMS_PER_BATCH = 4
        cfg.freeze()
        with self.assertLogs(ENGINE_LOGGER, "INFO"):
            scaled = apply_yolact_autoscale(cfg)
        self.assertTrue(scaled.is_frozen())
        self.assertAlmostEqual(scaled.SOLVER.BASE_LR, 5e-4)
        self.assertEqual(scaled.SOLVER.MAX_ITER, 1600000)
        self.assertEqual(scaled.SOLVER.STEPS, (560000, 1200000, 1400000, 1500000))
        self.assertEqual(scaled.SOLVER.WARMUP_ITERS, 500)
        self.assertEqual(cfg.SOLVER.MAX_ITER, 800000)  # the input is unchanged

        cfg = get_config(
            "yolact_R_50_FPN_550.yaml",
            ["SOLVER.YOLACT_AUTOSCALE", True, "SOLVER.IMS_PER_BATCH", 16],
        )
        self.assertEqual(apply_yolact_autoscale(cfg).SOLVER.STEPS, (140000, 300000, 350000, 375000))
        cfg.SOLVER.REFERENCE_WORLD_SIZE = 8
        with self.assertRaises(ValueError):
            apply_yolact_autoscale(cfg)
