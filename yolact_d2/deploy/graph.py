# Copyright (c) yolact_d2 contributors.
"""
The forms of YOLACT that are exported, as modules of one image: the whole inference pipeline
(:class:`YolactInferenceGraph`, the default) or the network alone (:class:`YolactNetworkGraph`,
whose outputs the predictor post-processes with the model's own PyTorch code).
"""

import torch
from torch import nn

__all__ = ["GRAPHS", "YolactInferenceGraph", "YolactNetworkGraph", "build_graph"]


def _check_exact_path(model: nn.Module) -> None:
    if model.fast_cpu_inference:
        raise ValueError(
            "export runs the exact fp32 model: set MODEL.YOLACT.FAST_CPU_INFERENCE False "
            "(runtimes have their own reduced-precision modes)"
        )


class YolactInferenceGraph(nn.Module):
    """
    A :class:`~yolact_d2.modeling.Yolact` as one function of one image, running exactly the
    model's own stages: the square resize, normalisation, backbone, FPN, head, protonet, priors,
    box decoding, the score pre-filter, Fast NMS (``torch.ops.yolact_d2.fast_nms``), mask
    assembly, the crop by the predicted box, YOLACT++ re-scoring, and boxes in image pixels.

    The masks are returned at prototype resolution (the paste step - stretching them to the
    image and thresholding, :func:`~yolact_d2.modeling.paste.paste_instances`
    - is the predictor's): D x 138 x 138 floats instead of D x H x W, and the
    paste then runs only where a mask can be non-zero.
    """

    # The outputs, in order (YOLACT++ adds "mask_scores").
    OUTPUTS = ("boxes", "scores", "classes", "masks")

    def __init__(self, model: nn.Module):
        """
        Args:
            model (Yolact): an eval-mode model with Fast NMS (``MODEL.YOLACT.TEST.NMS_TYPE``
                "fast") and the exact fp32 path (``FAST_CPU_INFERENCE`` off).
        """
        super().__init__()
        _check_exact_path(model)
        nms_type = model.postprocess_settings.nms_type
        if nms_type != "fast":
            raise ValueError(
                "export needs MODEL.YOLACT.TEST.NMS_TYPE 'fast' (the other NMS types loop over "
                f"the data in Python and cannot be traced); got {nms_type!r}"
            )
        self.model = model.eval()
        self.has_mask_scores = model.mask_branch.maskiou_net is not None

    @property
    def output_names(self):
        return self.OUTPUTS + (("mask_scores",) if self.has_mask_scores else ())

    def forward(self, image: torch.Tensor):
        """
        Args:
            image (Tensor): (H, W, 3) uint8 in the model's ``input_format`` channel order.

        Returns:
            tuple: "boxes" (D, 4) float32 pixel XYXY (integer values), "scores" (D,) float32,
            "classes" (D,) int64 in [0, C), "masks" (D, h, w) float32 soft masks at prototype
            resolution, cropped, and for YOLACT++ "mask_scores" (D,) float32; best first.
        """
        model = self.model
        height, width = image.shape[0], image.shape[1]
        if model.preserve_aspect_ratio:
            # Sizes follow from the image's: a graph of one image size (see export_program).
            outputs = model.predict(
                model.preprocess_image_keeping_aspect([{"image": image.permute(2, 0, 1)}])
            )
            detections = model.postprocess(outputs, [(height, width)], until="pixels")[0]
            detections["boxes"] = detections["boxes"].float()
            return tuple(detections[name] for name in self.output_names)
        images = image.permute(2, 0, 1)[None].float()
        # Always resized: the identity on an S x S image, and no branch on the input's size.
        outputs = model.predict(model.normalize(model.resize_to_input(images)))
        # The model's own post-processing, up to (not including) the paste step.
        detections = model.postprocess(outputs, [(height, width)], until="pixels")[0]
        detections["boxes"] = detections["boxes"].float()
        return tuple(detections[name] for name in self.output_names)


class YolactNetworkGraph(nn.Module):
    """
    The network of a :class:`~yolact_d2.modeling.Yolact` as one function of one image: the
    model's resize (square, or keeping the aspect ratio for a graph of one image size),
    normalisation, backbone, FPN, head and protonet, and its priors (a constant of the input
    size). Everything after it - box decoding, the score pre-filter, Fast NMS (any NMS type),
    mask assembly, the crop and the paste - is the model's own PyTorch code, run by
    :class:`~yolact_d2.deploy.ExportedPredictor` on the outputs
    (:func:`~yolact_d2.modeling.postprocessing.postprocess_predictions`).

    Why: a graph of data-dependent post-processing runs it at fixed sizes (every class's top-k
    padded to ``TOP_K`` candidates, a C x k x k IoU tensor), which costs a runtime several times
    what PyTorch's eager code costs on a trained model's few candidates (docs/BENCHMARKS.md);
    a runtime is best at the convolutions. YOLACT++ is not supported: its mask re-scoring net
    runs on the masks after NMS.
    """

    OUTPUTS = ("class_logits", "box_deltas", "coefficients", "prototypes", "priors")

    def __init__(self, model: nn.Module):
        """
        Args:
            model (Yolact): an eval-mode YOLACT (not YOLACT++) on the exact fp32 path.
        """
        super().__init__()
        _check_exact_path(model)
        if model.mask_branch.maskiou_net is not None:
            raise ValueError(
                "the network graph (--graph network) is for YOLACT: YOLACT++ re-scores its "
                "masks with a network after NMS; export the whole pipeline (--graph pipeline)"
            )
        self.model = model.eval()
        self.output_names = self.OUTPUTS

    def forward(self, image: torch.Tensor):
        """
        Args:
            image (Tensor): (H, W, 3) uint8 in the model's ``input_format`` channel order.

        Returns:
            tuple: "class_logits" (R, C + 1), "box_deltas" (R, 4), "coefficients" (R, k),
            "prototypes" (k, h, w), "priors" (R, 4) relative to the network input; float32.
        """
        model = self.model
        if model.preserve_aspect_ratio:
            images = model.preprocess_image_keeping_aspect([{"image": image.permute(2, 0, 1)}])
            outputs = model.predict(images)
        else:
            images = image.permute(2, 0, 1)[None].float()
            outputs = model.predict(model.normalize(model.resize_to_input(images)))
        return tuple(
            outputs[name] if name == "priors" else outputs[name][0] for name in self.OUTPUTS
        )


# The exported forms, by the name tools/export_model.py's --graph takes.
GRAPHS = {"pipeline": YolactInferenceGraph, "network": YolactNetworkGraph}


def build_graph(model: nn.Module, graph: str = "pipeline") -> nn.Module:
    """The module of :data:`GRAPHS` named ``graph`` for ``model``."""
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {sorted(GRAPHS)}, got {graph!r}")
    return GRAPHS[graph](model)
