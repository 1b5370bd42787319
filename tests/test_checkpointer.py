# Copyright (c) yolact_d2 contributors.
"""
YolactCheckpointer: torchvision and Detectron2 backbones, converted and earlier checkpoints,
class-count changes, bad files.
"""

import numpy as np
import os
import pickle
import tempfile
import unittest

import torch
import torchvision
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from yolact_d2.checkpoint.checkpointer import (
    CLASS_DEPENDENT_LAYERS,
    WeightsError,
    YolactCheckpointer,
)
from yolact_d2.checkpoint.key_names import convert_backbone_state_dict

from common import get_config
from training import CKPT_LOGGER, tiny_cfg


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
        # WeightsError (a ValueError): train_net.py prints it as one "error:" line.
        for name in ["text.pth", "text.pkl", "tensor.pth", "yolact_base_54_800000.pth"]:
            with self.assertRaisesRegex(WeightsError, self.path(name)):
                checkpointer.load(self.path(name))
        with self.assertRaises(WeightsError) as error:
            checkpointer.load(self.path("yolact_base_54_800000.pth"))
        self.assertEqual(
            str(error.exception),
            f"'{self.path('yolact_base_54_800000.pth')}' is an original dbolya/yolact checkpoint; "
            "convert it first: python tools/convert_yolact_weights.py "
            f"{self.path('yolact_base_54_800000.pth')} <output>.pth",
        )
