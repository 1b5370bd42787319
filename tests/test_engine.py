# Copyright (c) yolact_d2 contributors.
"""Training engine, checkpointer and train_net.py, on tiny configs (R-18, 128 x 128, CPU)."""

import importlib.util
import json
import numpy as np
import os
import pickle
import tempfile
import unittest
import warnings
from unittest import mock

import pytest
import torch
import torchvision
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import DefaultTrainer, HookBase, default_argument_parser, launch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

from yolact_d2.checkpoint.checkpointer import CLASS_DEPENDENT_LAYERS, YolactCheckpointer
from yolact_d2.checkpoint.key_names import convert_backbone_state_dict
from yolact_d2.engine import (
    YolactAMPTrainer,
    YolactSimpleTrainer,
    YolactTrainer,
    apply_yolact_autoscale,
    full_model_max_grad_norm,
)
from yolact_d2.engine.trainer import (
    apply_reference_batch_norm_rule,
    batch_norm_images_per_iteration,
    warn_if_untrained_start,
)
from yolact_d2.evaluation import YolactCOCOEvaluator
from yolact_d2.layers.batch_norm import EvalModeBatchNorm2d, freeze_batch_norm

from common import REPO_ROOT, get_config

CKPT_LOGGER = "fvcore.common.checkpoint"
ENGINE_LOGGER = "yolact_d2.engine.trainer"
# R-18 (basic blocks) at 128 x 128, batch 2 (1 per process with 2 processes), no evaluation.
TINY_OPTS = [
    "MODEL.RESNETS.DEPTH", 18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
    "MODEL.YOLACT.INPUT_SIZE", 128,
    "DATASETS.TRAIN", ("tiny_coco_train",),
    "DATASETS.TEST", (),
    "DATALOADER.NUM_WORKERS", 0,
    "SOLVER.IMS_PER_BATCH", 2,
    "SOLVER.MAX_ITER", 3,
    "SOLVER.CHECKPOINT_PERIOD", 100,
    "SEED", 0,
    # From random weights: BatchNorm trains at batch 2 (the reference's rule would freeze it).
    "MODEL.YOLACT.FREEZE_BN_BELOW_BATCH", 0,
    "MODEL.YOLACT.PRETRAINED_RECIPE", False,
]  # fmt: skip


def tiny_cfg(output_dir: str = "", opts=()):
    cfg = get_config("yolact_R_50_FPN_550.yaml", TINY_OPTS + list(opts))
    cfg.OUTPUT_DIR = output_dir
    return cfg


def train(cfg, resume=False, hooks=()):
    # As train_net.py (default_setup): the initial weights come from cfg.SEED, not from whatever
    # the tests before this one left in the global RNG. Some random initialisations, after only
    # 3 steps, make eval-mode BatchNorm saturate the class logits (no score above 0).
    seed_all_rng(cfg.SEED)
    trainer = YolactTrainer(cfg)
    trainer.register_hooks(list(hooks))
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def lr_schedule(cfg):
    """The learning rate of every iteration under YolactTrainer's scheduler."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = YolactTrainer.build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def load_train_net():
    spec = importlib.util.spec_from_file_location(
        "train_net", os.path.join(REPO_ROOT, "train_net.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _distributed_worker(cfg, output_dir):
    """Trains in one of the processes started by launch(); saves its final parameters."""
    torch.set_num_threads(1)
    trainer = train(cfg)
    model = trainer.model.module if comm.get_world_size() > 1 else trainer.model
    losses = (
        [v for v, _ in trainer.storage.history("total_loss").values()]
        if comm.is_main_process()
        else []
    )
    state = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers() if "running_" in k}
    torch.save(
        {
            "params": state,
            "running_stats": buffers,
            "world_size": comm.get_world_size(),
            "losses": losses,
        },
        os.path.join(output_dir, f"rank{comm.get_rank()}.pth"),
    )


def _build_detectron2_default_trainer(cfg):
    """In a launch() worker: Detectron2's own DefaultTrainer on a YOLACT config."""
    torch.set_num_threads(1)
    DefaultTrainer(cfg)


class _SimulatedCrash(Exception):
    pass


class _StopAt(HookBase):
    """Simulates a crash after the step of iteration ``iteration``."""

    def __init__(self, iteration):
        self.iteration = iteration

    def after_step(self):
        if self.trainer.iter == self.iteration:
            raise _SimulatedCrash(f"simulated crash at iteration {self.iteration}")


class TestTrainAndEvaluate(unittest.TestCase):
    def test_train_then_eval_only(self):
        with tempfile.TemporaryDirectory() as out:
            trainer = train(tiny_cfg(out))
            self.assertEqual(trainer.iter, 3)  # max_iter after the loop
            for name in ["total_loss", "loss_cls", "loss_box", "loss_mask", "loss_semantic_seg"]:
                values = [v for v, _ in trainer.storage.history(name).values()]
                self.assertEqual(len(values), 3, name)
                self.assertTrue(np.isfinite(values).all(), f"{name}: {values}")
            self.assertTrue(os.path.isfile(os.path.join(out, "model_final.pth")))

            # train_net.py --eval-only on the whole of tiny_coco_val; every prior is a candidate
            # so that the barely trained model makes detections (and masks) to evaluate.
            eval_cfg = tiny_cfg(
                os.path.join(out, "eval"),
                [
                    "DATASETS.TEST", ("tiny_coco_val",),
                    "MODEL.YOLACT.TEST.SCORE_THRESH", 0.0,
                    "MODEL.YOLACT.TEST.DETECTIONS_PER_IMAGE", 5,
                    "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
                ],
            )  # fmt: skip
            config_file = os.path.join(out, "eval.yaml")
            with open(config_file, "w") as f:
                f.write(eval_cfg.dump())
            args = default_argument_parser().parse_args(
                ["--config-file", config_file, "--eval-only"]
            )
            results = load_train_net().main(args)
        self.assertEqual(set(results), {"bbox", "segm"})
        for task in ("bbox", "segm"):
            self.assertIn("AP", results[task])
            self.assertTrue(np.isfinite(results[task]["AP"]), results[task])


class TestDistributedCPU(unittest.TestCase):
    def test_two_gloo_processes_stay_in_sync(self):
        with tempfile.TemporaryDirectory() as out:
            torch.manual_seed(0)
            initial = {k: v.detach().clone() for k, v in build_model(tiny_cfg()).named_parameters()}
            launch(_distributed_worker, 2, dist_url="auto", args=(tiny_cfg(out), out))
            ranks = [torch.load(os.path.join(out, f"rank{r}.pth")) for r in range(2)]
        self.assertEqual([r["world_size"] for r in ranks], [2, 2])
        self.assertEqual(len(ranks[0]["losses"]), 3)
        self.assertTrue(np.isfinite(ranks[0]["losses"]).all())
        params0, params1 = ranks[0]["params"], ranks[1]["params"]
        self.assertEqual(params0.keys(), params1.keys())
        for name in params0:
            self.assertTrue(torch.equal(params0[name], params1[name]), name)
        # Training did change the (shared) parameters.
        changed = [n for n in params0 if not torch.equal(params0[n], initial[n])]
        self.assertGreater(len(changed), len(params0) // 2)
        # Plain BatchNorm: each rank keeps the statistics of its own images (Detectron2's
        # broadcast_buffers=False).
        stats0, stats1 = ranks[0]["running_stats"], ranks[1]["running_stats"]
        self.assertTrue(all(not torch.equal(stats0[k], stats1[k]) for k in stats0))

    def test_why_yolact_trainer_replaces_default_trainer_init(self):
        # YolactTrainer.__init__ is its own because Detectron2's DefaultTrainer.__init__ wraps
        # the model in DDP with device_ids=[local rank], which CPU processes cannot take (and
        # it has no hook for the wrapper or the step trainer). If this ever stops failing,
        # YolactTrainer can extend DefaultTrainer.__init__ instead.
        with tempfile.TemporaryDirectory() as out:
            with self.assertRaises(Exception) as raised:
                launch(_build_detectron2_default_trainer, 2, dist_url="auto", args=(tiny_cfg(out),))
        self.assertIn("device_ids", str(raised.exception))

    def test_synchronised_batch_norm_on_gloo(self):
        # naiveSyncBN (the *_scratch.yaml recipes): the statistics of both ranks' images are
        # reduced together, so the running statistics agree although the images differ.
        with tempfile.TemporaryDirectory() as out:
            cfg = tiny_cfg(out, ["MODEL.RESNETS.NORM", "naiveSyncBN", "SOLVER.MAX_ITER", 2])
            launch(_distributed_worker, 2, dist_url="auto", args=(cfg, out))
            ranks = [torch.load(os.path.join(out, f"rank{r}.pth")) for r in range(2)]
        stats0, stats1 = ranks[0]["running_stats"], ranks[1]["running_stats"]
        self.assertEqual(len(stats0), 2 * 20)  # stem + 16 block convs + 3 shortcuts
        for name in stats0:
            torch.testing.assert_close(stats0[name], stats1[name], rtol=1e-5, atol=1e-6)
        # ... and they moved away from their initial values (0 and 1).
        self.assertFalse(
            torch.equal(stats0["backbone.bottom_up.stem.conv1.norm.running_mean"], torch.zeros(64))
        )


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


class TestResume(unittest.TestCase):
    OPTS = [
        "SOLVER.MAX_ITER", 5,
        "SOLVER.STEPS", (3,),
        "SOLVER.WARMUP_ITERS", 2,
        "SOLVER.CHECKPOINT_PERIOD", 2,
    ]  # fmt: skip

    def test_resume_continues_iteration_and_lr(self):
        with tempfile.TemporaryDirectory() as out:
            cfg = tiny_cfg(out, self.OPTS)
            with self.assertRaises(_SimulatedCrash):
                train(cfg, hooks=[_StopAt(2)])
            # The crash came after iteration 2; the last checkpoint is from iteration 1.
            with open(os.path.join(out, "last_checkpoint")) as f:
                self.assertEqual(f.read().strip(), "model_0000001.pth")

            trainer = YolactTrainer(cfg)
            trainer.resume_or_load(resume=True)
            self.assertEqual(trainer.start_iter, 2)
            self.assertGreater(len(trainer.optimizer.state_dict()["state"]), 0)
            trainer.train()
        lrs = trainer.storage.history("lr").values()
        self.assertEqual([it for _, it in lrs], [2, 3, 4])
        expected = lr_schedule(cfg)
        for lr, it in lrs:
            self.assertAlmostEqual(lr, expected[it], places=12)
        self.assertAlmostEqual(expected[3], 0.1 * cfg.SOLVER.BASE_LR, places=12)

    def test_interrupted_save_leaves_no_partial_file(self):
        model = nn.Linear(2, 2)
        with tempfile.TemporaryDirectory() as out:
            checkpointer = YolactCheckpointer(model, out)
            checkpointer.save("model_0000001", iteration=1)
            before = sorted(os.listdir(out))
            self.assertEqual(before, ["last_checkpoint", "model_0000001.pth"])

            def save_half_then_fail(obj, f, *args, **kwargs):
                f.write(b"\x80\x02partial checkpoint")
                raise OSError("No space left on device")

            with mock.patch("torch.save", save_half_then_fail):
                with self.assertRaises(OSError):
                    checkpointer.save("model_0000003", iteration=3)
            self.assertEqual(sorted(os.listdir(out)), before)
            self.assertEqual(
                checkpointer.get_checkpoint_file(), os.path.join(out, "model_0000001.pth")
            )
            self.assertEqual(checkpointer.load(checkpointer.get_checkpoint_file())["iteration"], 1)


class TestCheckpointer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def test_torchvision_resnet(self):
        torch.manual_seed(0)
        state = torchvision.models.resnet50(weights=None).state_dict()
        torch.save(state, self.path("resnet50.pth"))
        model = build_model(
            get_config("yolact_R_50_FPN_550.yaml", ["MODEL.YOLACT.INPUT_SIZE", 128])
        )
        with self.assertLogs(CKPT_LOGGER, "INFO") as logs:
            YolactCheckpointer(model).load(self.path("resnet50.pth"))
        self.assertTrue(any("torchvision" in m and "fc.weight" in m for m in logs.output))

        renamed, dropped = convert_backbone_state_dict(state)
        self.assertEqual(dropped, ["fc.weight", "fc.bias"])
        model_state = model.state_dict()
        bottom_up = {k for k in model_state if k.startswith("backbone.bottom_up.")}
        self.assertEqual(set(renamed), bottom_up)  # every backbone tensor has a source
        for key, value in renamed.items():
            self.assertTrue(torch.equal(model_state[key], value), key)
        self.assertTrue(
            torch.equal(
                model_state["backbone.bottom_up.res4.5.conv3.norm.running_var"],
                state["layer3.5.bn3.running_var"],
            )
        )

    def test_data_parallel_prefix_is_stripped(self):
        torch.manual_seed(0)
        source = build_model(tiny_cfg())
        torch.save(
            {"model": {"module." + k: v for k, v in source.state_dict().items()}},
            self.path("ddp.pth"),
        )
        # and a torchvision backbone saved from a DataParallel classifier
        net = torchvision.models.resnet18(weights=None)
        torch.save({"module." + k: v for k, v in net.state_dict().items()}, self.path("tv.pth"))
        torch.manual_seed(1)
        model = build_model(tiny_cfg())
        YolactCheckpointer(model).load(self.path("ddp.pth"))
        for key, value in source.state_dict().items():
            self.assertTrue(torch.equal(model.state_dict()[key], value), key)
        YolactCheckpointer(model).load(self.path("tv.pth"))
        self.assertTrue(
            torch.equal(
                model.state_dict()["backbone.bottom_up.res3.1.conv2.weight"],
                net.state_dict()["layer2.1.conv2.weight"],
            )
        )

    def test_checkpoint_of_an_earlier_version_loads_into_the_mask_branch(self):
        torch.manual_seed(0)
        source = build_model(tiny_cfg()).state_dict()
        # before the mask branch: protonet.* and semantic_seg_conv.* at the top of the model
        old = {k.replace("mask_branch.", "", 1): v for k, v in source.items()}
        self.assertIn("protonet.predictor.weight", old)
        torch.save({"model": old}, self.path("old.pth"))
        torch.manual_seed(1)
        model = build_model(tiny_cfg())
        with self.assertLogs(CKPT_LOGGER, "INFO") as logs:
            YolactCheckpointer(model).load(self.path("old.pth"))
        self.assertTrue(any("earlier yolact_d2" in m for m in logs.output), logs.output)
        self.assertFalse(any("not found in the checkpoint" in m for m in logs.output))
        for key, value in source.items():
            self.assertTrue(torch.equal(model.state_dict()[key], value), key)
        # The model itself upgrades the names, so Detectron2's checkpointer (DefaultPredictor's)
        # and a strict load_state_dict take the old file too.
        for load in (
            lambda m: DetectionCheckpointer(m).load(self.path("old.pth")),
            lambda m: m.load_state_dict(dict(old), strict=True),
        ):
            torch.manual_seed(2)
            other = build_model(tiny_cfg())
            load(other)
            for key, value in source.items():
                self.assertTrue(torch.equal(other.state_dict()[key], value), key)

    def test_detectron2_pkl_backbones(self):
        model = build_model(tiny_cfg())
        stem = np.random.rand(64, 3, 7, 7).astype(np.float32)
        block = np.random.rand(64, 64, 3, 3).astype(np.float32)
        bn_scale = np.random.rand(64).astype(np.float32)
        files = {
            # tools/convert-torchvision-to-d2.py format
            "d2.pkl": {
                "model": {"stem.conv1.weight": stem, "res2.0.conv1.weight": block},
                "__author__": "torchvision",
                "matching_heuristics": True,
            },
            # Detectron2 model zoo ImageNet backbones (Caffe2 names)
            "c2.pkl": {"conv1_w": stem, "res2_0_branch2a_w": block, "res_conv1_bn_s": bn_scale},
        }
        for name, content in files.items():
            with open(self.path(name), "wb") as f:
                pickle.dump(content, f)
            YolactCheckpointer(model).load(self.path(name))
            state = model.state_dict()
            np.testing.assert_array_equal(state["backbone.bottom_up.stem.conv1.weight"], stem)
            np.testing.assert_array_equal(state["backbone.bottom_up.res2.0.conv1.weight"], block)
        np.testing.assert_array_equal(state["backbone.bottom_up.stem.conv1.norm.weight"], bn_scale)

    def test_class_count_change_reinitialises_only_class_layers(self):
        # (the mask-IoU net needs 252+ pixel inputs; the models are only built, never run)
        opts = ["MODEL.YOLACT.MASKIOU.ENABLED", True, "MODEL.YOLACT.INPUT_SIZE", 256]
        torch.manual_seed(0)
        source = build_model(tiny_cfg(opts=opts))
        YolactCheckpointer(source, self.tmp.name).save("coco80")
        torch.manual_seed(1)
        target = build_model(tiny_cfg(opts=opts + ["MODEL.YOLACT.NUM_CLASSES", 3]))
        fresh = {k: v.clone() for k, v in target.state_dict().items()}

        with self.assertLogs(CKPT_LOGGER, "INFO") as logs:
            YolactCheckpointer(target).load(self.path("coco80.pth"))
        message = next(m for m in logs.output if "class-dependent" in m)
        for layer in CLASS_DEPENDENT_LAYERS:
            self.assertIn(layer, message)
        self.assertIn(
            "head.cls_score (checkpoint (243, 256, 3, 3), model (12, 256, 3, 3))", message
        )

        source_state = source.state_dict()
        for key, value in target.state_dict().items():
            if key.startswith(tuple(layer + "." for layer in CLASS_DEPENDENT_LAYERS)):
                self.assertTrue(torch.equal(value, fresh[key]), key)
            else:
                self.assertTrue(torch.equal(value, source_state[key]), key)

    def test_converted_yolact_checkpoint(self):
        torch.manual_seed(0)
        source = build_model(tiny_cfg())
        state = source.state_dict()
        # tools/convert_yolact_weights.py writes a .pth like this; a .pkl with numpy also works.
        torch.save(
            {
                "model": state,
                "__author__": "yolact_d2",
                "matching_heuristics": False,
                "yolact_architecture": "yolact_resnet50",
                "yolact_config": "configs/yolact_R_50_FPN_550.yaml",
            },
            self.path("converted.pth"),
        )
        with open(self.path("converted.pkl"), "wb") as f:
            numpy_state = {k: v.numpy() for k, v in state.items()}
            pickle.dump({"model": numpy_state, "__author__": "yolact_d2"}, f)
        for name in ["converted.pth", "converted.pkl"]:
            torch.manual_seed(1)
            target = build_model(tiny_cfg())
            extra = YolactCheckpointer(target).load(self.path(name))
            for key, value in target.state_dict().items():
                self.assertTrue(torch.equal(value, state[key]), f"{name}: {key}")
        self.assertEqual(extra["__author__"], "yolact_d2")

    def test_bad_files(self):
        model = nn.Linear(2, 2)
        checkpointer = YolactCheckpointer(model)
        missing = self.path("missing.pth")
        with self.assertRaisesRegex(FileNotFoundError, missing):
            checkpointer.load(missing)
        bad = {
            "text.pth": b"this is not a checkpoint",
            "text.pkl": b"this is not a pickle either",
        }
        for name, content in bad.items():
            with open(self.path(name), "wb") as f:
                f.write(content)
        torch.save(torch.zeros(3), self.path("tensor.pth"))
        torch.save(
            {
                "proto_net.0.weight": torch.zeros(1),
                "backbone.layers.0.0.conv1.weight": torch.zeros(1),
            },
            self.path("yolact_base_54_800000.pth"),
        )
        for name in ["text.pth", "text.pkl", "tensor.pth", "yolact_base_54_800000.pth"]:
            with self.assertRaisesRegex(ValueError, self.path(name)):
                checkpointer.load(self.path(name))


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


class TestEvaluator(unittest.TestCase):
    """YOLACT++: segm is ranked by mask_scores, bbox by scores."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        square = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]
        coco = {
            "images": [{"id": 1, "file_name": "a.jpg", "height": 64, "width": 64}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
                 "area": 400, "iscrowd": 0, "segmentation": [square]},
            ],
            "categories": [{"id": 1, "name": "thing"}],
        }  # fmt: skip
        json_file = os.path.join(cls.tmp.name, "gt.json")
        with open(json_file, "w") as f:
            json.dump(coco, f)
        cls.dataset = "yolact_engine_toy_eval"
        if cls.dataset not in DatasetCatalog.list():
            register_coco_instances(cls.dataset, {}, json_file, cls.tmp.name)
        DatasetCatalog.get(cls.dataset)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def predictions(self, with_mask_scores: bool):
        # Detection 0: right box, wrong mask. Detection 1: wrong box, right mask.
        masks = torch.zeros(2, 64, 64, dtype=torch.bool)
        masks[0, 40:60, 40:60] = True
        masks[1, 10:30, 10:30] = True
        instances = Instances((64, 64))
        instances.pred_boxes = Boxes(
            torch.tensor([[10.0, 10.0, 30.0, 30.0], [40.0, 40.0, 60.0, 60.0]])
        )
        instances.scores = torch.tensor([0.9, 0.1])
        instances.pred_classes = torch.tensor([0, 0])
        instances.pred_masks = masks
        if with_mask_scores:
            instances.mask_scores = torch.tensor([0.1, 0.9])
        return [{"instances": instances}]

    def evaluate(self, with_mask_scores: bool):
        cfg = tiny_cfg(self.tmp.name)
        evaluator = YolactTrainer.build_evaluator(
            cfg, self.dataset, os.path.join(self.tmp.name, "out")
        )
        self.assertIsInstance(evaluator, YolactCOCOEvaluator)
        evaluator.reset()
        evaluator.process([{"image_id": 1}], self.predictions(with_mask_scores))
        return evaluator.evaluate()

    def test_mask_scores_rank_masks(self):
        results = self.evaluate(with_mask_scores=True)
        self.assertAlmostEqual(results["bbox"]["AP"], 100.0)
        self.assertAlmostEqual(results["segm"]["AP"], 100.0)
        with open(os.path.join(self.tmp.name, "out", "coco_instances_results.json")) as f:
            saved = json.load(f)
        scores = [(r["score"], r["mask_score"]) for r in saved]
        np.testing.assert_allclose(scores, [(0.9, 0.1), (0.1, 0.9)], rtol=1e-6)
        self.assertEqual({r["category_id"] for r in saved}, {1})

    def test_without_mask_scores_both_use_box_scores(self):
        results = self.evaluate(with_mask_scores=False)
        self.assertAlmostEqual(results["bbox"]["AP"], 100.0)
        self.assertLess(results["segm"]["AP"], 60.0)


if __name__ == "__main__":
    unittest.main()
