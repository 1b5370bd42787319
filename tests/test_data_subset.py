# Copyright (c) yolact_d2 contributors.
"""register_dataset_subset: a fixed subset evaluated against its own images only."""

import tempfile

import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import annotations_to_instances
from detectron2.structures import Instances

from yolact_d2.data import register_dataset_subset
from yolact_d2.evaluation import YolactCOCOEvaluator


def ground_truth_as_predictions(record):
    """The non-crowd annotations of ``record`` as perfect detections (score 1)."""
    annotations = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
    size = (record["height"], record["width"])
    gt = annotations_to_instances(annotations, size, mask_format="bitmask")
    predictions = Instances(size)
    predictions.pred_boxes = gt.gt_boxes
    predictions.pred_classes = gt.gt_classes
    predictions.scores = torch.ones(len(gt))
    predictions.pred_masks = gt.gt_masks.tensor
    return {"instances": predictions}


def test_subset_is_evaluated_on_its_own_images():
    name = register_dataset_subset("test_tiny_coco_train_first2", "tiny_coco_train", 2)
    assert name == "test_tiny_coco_train_first2"
    records = DatasetCatalog.get(name)
    source = DatasetCatalog.get("tiny_coco_train")
    assert [r["image_id"] for r in records] == [r["image_id"] for r in source[:2]]
    metadata = MetadataCatalog.get(name)
    assert not hasattr(metadata, "json_file")
    assert metadata.thing_classes == MetadataCatalog.get("tiny_coco_train").thing_classes

    # Perfect detections on the 2 images score AP 100: the ground truth is those 2 images only
    # (against the source's json, the other 48 images' objects would count as missed).
    with tempfile.TemporaryDirectory() as out:
        evaluator = YolactCOCOEvaluator(name, tasks=("bbox", "segm"), output_dir=out)
        evaluator.reset()
        for record in records:
            evaluator.process(
                [{"image_id": record["image_id"]}], [ground_truth_as_predictions(record)]
            )
        results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP"] == pytest.approx(100.0)


def test_empty_subset_is_rejected():
    with pytest.raises(ValueError, match="tiny_coco_train"):
        register_dataset_subset("test_tiny_coco_train_first0", "tiny_coco_train", 0)
