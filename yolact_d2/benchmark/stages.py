# Copyright (c) yolact_d2 contributors.
"""
Per-stage timing of YOLACT inference, by running the model's own stage functions one after
another exactly as ``DefaultPredictor`` -> ``Yolact.forward`` -> ``Yolact.inference`` do.
"""

import numpy as np
import time
from typing import Dict, List, Sequence, Tuple

import torch

from detectron2.structures import Instances

from yolact_d2.modeling.box_coder import decode_boxes
from yolact_d2.modeling.postprocessing import (
    assemble_detection_masks,
    paste_detections,
    select_candidates,
    suppress,
)

from .predictor import BenchmarkPredictor
from .timing import Stopwatch, synchronize

__all__ = [
    "STAGES",
    "NETWORK_STAGES",
    "POSTPROCESS_STAGES",
    "YolactStageProfiler",
    "postprocess_stages",
]

# preprocess: DefaultPredictor's input conversion, the model's S x S resize and normalisation
#   (and the channels_last copy of the fast path);
# backbone_fpn, head, protonet: the three networks (head includes building its level list);
# decode: everything between the networks and NMS - prior generation, output casts, box
#   decoding, softmax and the score pre-filter;
# nms: the configured NMS on the candidates;
# mask_assembly: prototypes x coefficients, sigmoid, crop (and YOLACT++ re-scoring);
# paste: upsampling the masks to the image, thresholding, building Instances.
NETWORK_STAGES = ("backbone_fpn", "head", "protonet")
POSTPROCESS_STAGES = ("decode", "nms", "mask_assembly", "paste")
STAGES = ("preprocess",) + NETWORK_STAGES + POSTPROCESS_STAGES


class _ModuleClock:
    """Forward hooks that record when each watched module starts and ends."""

    def __init__(self, device: torch.device, modules: Dict[str, torch.nn.Module]):
        self.device = device
        self.marks: Dict[str, float] = {}
        self._handles = []
        for name, module in modules.items():
            self._handles.append(module.register_forward_pre_hook(self._marker(name + ":start")))
            self._handles.append(module.register_forward_hook(self._marker(name + ":end")))

    def _marker(self, key: str):
        def hook(*_):
            synchronize(self.device)
            self.marks[key] = time.perf_counter()

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class YolactStageProfiler:
    """
    Times one batch through a YOLACT :class:`BenchmarkPredictor` stage by stage (see
    :data:`STAGES`). The networks are timed with forward hooks inside ``Yolact.predict`` itself;
    pre- and post-processing call the same functions ``DefaultPredictor`` and
    ``Yolact.inference`` call, in the same order, so the results are identical to the
    predictor's (tests check this).
    """

    def __init__(self, predictor: BenchmarkPredictor):
        self.predictor = predictor
        self.model = predictor.model
        self.device = torch.device(predictor.cfg.MODEL.DEVICE)

    def __call__(
        self, original_images: Sequence[np.ndarray]
    ) -> Tuple[List[Instances], Dict[str, float], List[int]]:
        """
        Args:
            original_images (list[np.ndarray]): (H, W, 3) BGR images, one batch.

        Returns:
            instances (list[Instances]): the predictions, one per image.
            seconds (dict[str, float]): time of each stage for the whole batch.
            num_candidates (list[int]): priors passing the score pre-filter, per image.
        """
        watch = Stopwatch(self.device)
        with torch.no_grad(), self.predictor.autocast():
            with watch("preprocess"):
                inputs = [self.predictor.prepare(image) for image in original_images]
                images = self.model.preprocess_image(inputs)
            outputs = self._predict(images, watch)
            instances, num_candidates = self._postprocess(outputs, inputs, watch)
        seconds = watch.totals()
        return instances, {s: seconds.get(s, 0.0) for s in STAGES}, num_candidates

    def _predict(self, images: torch.Tensor, watch: Stopwatch) -> Dict[str, torch.Tensor]:
        """``Yolact.predict`` with its networks timed by hooks; the gaps go to neighbours."""
        modules = dict(zip(NETWORK_STAGES, self.model.network_modules(images)))
        clock = _ModuleClock(self.device, modules)
        try:
            synchronize(self.device)
            start = time.perf_counter()
            outputs = self.model.predict(images)
            synchronize(self.device)
            end = time.perf_counter()
        finally:
            clock.remove()
        m = clock.marks
        watch.add("preprocess", m["backbone_fpn:start"] - start)
        watch.add("backbone_fpn", m["backbone_fpn:end"] - m["backbone_fpn:start"])
        watch.add("head", m["head:end"] - m["backbone_fpn:end"])
        watch.add("protonet", m["protonet:end"] - m["head:end"])
        watch.add("decode", end - m["protonet:end"])
        return outputs

    def _postprocess(
        self, outputs: Dict[str, torch.Tensor], inputs: List[Dict], watch: Stopwatch
    ) -> Tuple[List[Instances], List[int]]:
        """``Yolact.inference``, one stage function at a time."""
        model = self.model
        with watch("decode"):
            boxes = decode_boxes(outputs["box_deltas"], outputs["priors"], model.box_variances)
        image_sizes = [(int(x["height"]), int(x["width"])) for x in inputs]
        return postprocess_stages(model, outputs, boxes, image_sizes, watch)


def postprocess_stages(
    model,
    outputs: Dict[str, torch.Tensor],
    boxes: torch.Tensor,
    image_sizes: Sequence[Tuple[int, int]],
    watch: Stopwatch,
) -> Tuple[List[Instances], List[int]]:
    """
    ``Yolact.inference`` after box decoding, one stage function at a time, timed into
    ``watch`` ("decode" for the softmax and pre-filter, "nms", "mask_assembly", "paste").

    Args:
        model (Yolact): its settings are used.
        outputs (dict): :meth:`Yolact.predict` outputs ("class_logits", "coefficients",
            "prototypes").
        boxes (Tensor): (N, R, 4) decoded relative XYXY boxes.
        image_sizes (list[tuple[int, int]]): (H, W) of each image.
        watch (Stopwatch): collects the times.

    Returns:
        instances (list[Instances]): one per image.
        num_candidates (list[int]): priors passing the score pre-filter, per image.
    """
    with watch("decode"):
        nms = model.nms_function()
    instances, num_candidates = [], []
    for i, image_size in enumerate(image_sizes):
        with watch("decode"):
            scores, candidates = select_candidates(
                outputs["class_logits"][i], model.score_threshold
            )
        with watch("nms"):
            detections = suppress(boxes[i], scores, candidates, nms)
        with watch("mask_assembly"):
            assembled = assemble_detection_masks(
                detections,
                boxes[i],
                outputs["coefficients"][i],
                outputs["prototypes"][i],
                crop=model.crop_masks,
                maskiou_net=model.maskiou_net,
                rescore_mask=model.rescore_mask,
                rescore_box=model.rescore_box,
            )
        with watch("paste"):
            instances.append(paste_detections(assembled, image_size, model.mask_threshold))
        num_candidates.append(len(candidates))
    return instances, num_candidates
