# Copyright (c) yolact_d2 contributors.
"""COCO evaluation of YOLACT predictions (YOLACT++ masks ranked by their own scores)."""

import contextlib
from typing import Dict, List, Optional, Sequence

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json

from yolact_d2.utils.polygons import mask_to_polygons

__all__ = ["YolactCOCOEvaluator", "instances_to_coco_results"]


def instances_to_coco_results(
    instances, image_id, category_ids: Optional[Sequence[int]] = None, polygons: bool = False
) -> List[Dict]:
    """
    The predictions of one image as COCO results (Detectron2's ``instances_to_coco_json``:
    "image_id", "category_id", "bbox" XYWH, "score", "segmentation" as compressed RLE), with
    YOLACT++'s mask scores as "mask_score" (the score of the segmentation).

    Args:
        instances (Instances): predictions of one image, on CPU.
        image_id (int): the image's id.
        category_ids (list[int] or None): the dataset's category id of each contiguous class
            (None: keep the contiguous ids 0..C-1, as COCOEvaluator expects before mapping).
        polygons (bool): also write "polygons" (see
            :func:`~yolact_d2.utils.polygons.mask_to_polygons`).

    Returns:
        list[dict]: one result per detection.
    """
    results = instances_to_coco_json(instances, image_id)
    if instances.has("mask_scores"):
        for result, mask_score in zip(results, instances.mask_scores.tolist()):
            result["mask_score"] = mask_score
    if category_ids is not None:
        for result in results:
            result["category_id"] = int(category_ids[result["category_id"]])
    if polygons and instances.has("pred_masks"):
        for result, mask in zip(results, instances.pred_masks.numpy()):
            result["polygons"] = mask_to_polygons(mask)
    return results


class YolactCOCOEvaluator(COCOEvaluator):
    """
    :class:`COCOEvaluator` that ranks YOLACT++ masks by their own score: when the predicted
    ``Instances`` have ``mask_scores`` (the box score times the predicted mask IoU), "segm" is
    evaluated with them while "bbox" keeps ``scores``, as the reference's evaluation does.
    The saved ``coco_instances_results.json`` holds the box scores as "score" and the mask
    scores as "mask_score".
    """

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            instances = output["instances"].to(self._cpu_device)
            results = instances_to_coco_results(instances, input["image_id"])
            self._predictions.append({"image_id": input["image_id"], "instances": results})

    def _eval_predictions(self, predictions, img_ids=None):
        results = [r for p in predictions for r in p["instances"]]
        tasks = self._tasks or self._tasks_from_predictions(results)
        if "segm" not in tasks or not any("mask_score" in r for r in results):
            super()._eval_predictions(predictions, img_ids)
            return
        box_tasks = tuple(t for t in tasks if t != "segm")
        if box_tasks:
            with self._override(tasks=box_tasks):
                super()._eval_predictions(_copy_predictions(predictions), img_ids)
        # The json with box scores is written above; do not overwrite it with mask scores.
        output_dir = None if box_tasks else self._output_dir
        with self._override(tasks=("segm",), output_dir=output_dir):
            super()._eval_predictions(_copy_predictions(predictions, "mask_score"), img_ids)

    @contextlib.contextmanager
    def _override(self, **attributes):
        saved = {name: getattr(self, "_" + name) for name in attributes}
        for name, value in attributes.items():
            setattr(self, "_" + name, value)
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(self, "_" + name, value)


def _copy_predictions(predictions, score_key: str = "score"):
    """
    Fresh copies of the COCO-json predictions (COCOEvaluator maps category ids in place), with
    ``score_key`` as the "score" (results lacking it keep their score).
    """
    return [
        {
            "image_id": p["image_id"],
            "instances": [dict(r, score=r.get(score_key, r["score"])) for r in p["instances"]],
        }
        for p in predictions
    ]
