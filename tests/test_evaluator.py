# Copyright (c) yolact_d2 contributors.
"""YolactCOCOEvaluator: YOLACT++ mask scores rank the masks."""

import json
import numpy as np
import os
import tempfile
import unittest

import torch

from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.structures import Boxes, Instances

from yolact_d2.engine import YolactTrainer
from yolact_d2.evaluation import YolactCOCOEvaluator

from training import tiny_cfg


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
