# Copyright (c) yolact_d2 contributors.
"""train_net.py end to end: training, --eval-only, gloo processes, resume (tiny configs, CPU)."""

import json
import numpy as np
import os
import tempfile
import unittest
from unittest import mock

import torch
from torch import nn

from detectron2.engine import DefaultTrainer, HookBase, default_argument_parser, launch
from detectron2.modeling import build_model

from yolact_d2.checkpoint.checkpointer import YolactCheckpointer
from yolact_d2.data import tiny_coco_root
from yolact_d2.engine import YolactTrainer

from training import distributed_worker, load_train_net, lr_schedule, tiny_cfg, train


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
            detections = os.path.join(out, "eval", "inference", "coco_instances_results.json")
            with open(detections) as f:
                num_detections = len(json.load(f))
            independent = _coco_ap(detections)
        self.assertEqual(set(results), {"bbox", "segm"})
        self.assertEqual(num_detections, 5 * 50)  # DETECTIONS_PER_IMAGE on every val image
        # The AP that train_net.py reports is pycocotools' own on the detections it wrote.
        for task in ("bbox", "segm"):
            self.assertAlmostEqual(results[task]["AP"], independent[task], places=6)


def _coco_ap(results_file: str) -> dict:
    """AP (x 100) of a COCO results file on tiny_coco_val, by pycocotools' COCOeval."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(os.path.join(tiny_coco_root(), "annotations/instances_val2017.json"))
        aps = {}
        for task, iou_type in (("bbox", "bbox"), ("segm", "segm")):
            evaluator = COCOeval(ground_truth, ground_truth.loadRes(results_file), iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            aps[task] = 100 * evaluator.stats[0]
    return aps


class TestDistributedCPU(unittest.TestCase):
    def test_two_gloo_processes_stay_in_sync(self):
        with tempfile.TemporaryDirectory() as out:
            torch.manual_seed(0)
            initial = {k: v.detach().clone() for k, v in build_model(tiny_cfg()).named_parameters()}
            launch(distributed_worker, 2, dist_url="auto", args=(tiny_cfg(out), out))
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
            launch(distributed_worker, 2, dist_url="auto", args=(cfg, out))
            ranks = [torch.load(os.path.join(out, f"rank{r}.pth")) for r in range(2)]
        stats0, stats1 = ranks[0]["running_stats"], ranks[1]["running_stats"]
        self.assertEqual(len(stats0), 2 * 20)  # stem + 16 block convs + 3 shortcuts
        for name in stats0:
            torch.testing.assert_close(stats0[name], stats1[name], rtol=1e-5, atol=1e-6)
        # ... and they moved away from their initial values (0 and 1).
        self.assertFalse(
            torch.equal(stats0["backbone.bottom_up.stem.conv1.norm.running_mean"], torch.zeros(64))
        )


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
