# Copyright (c) yolact_d2 contributors.
"""Running an exported YOLACT (ONNX on onnxruntime or OpenVINO, .pt2 on PyTorch) like
Detectron2's ``DefaultPredictor``."""

import json
import numpy as np
from typing import Dict, List, Optional

import torch

from detectron2.structures import Instances

from yolact_d2.data.image_io import in_input_format
from yolact_d2.layers.input_size import aspect_preserving_size, padded_input_size
from yolact_d2.modeling.paste import paste_instances
from yolact_d2.modeling.postprocessing import PostprocessSettings, postprocess_predictions
from yolact_d2.utils.signal_stack import preserved_signal_stack

from .metadata import exported_config, read_metadata

__all__ = ["ONNX_RUNTIMES", "RUNTIMES", "ExportedModel", "ExportedPredictor"]

# The runtimes of an exported model: ONNX files run on the first two, .pt2 programs on PyTorch.
ONNX_RUNTIMES = ("onnxruntime", "openvino")
RUNTIMES = ONNX_RUNTIMES + ("pytorch",)


class _OnnxRuntimeSession:
    def __init__(self, path: str, num_threads: Optional[int], precision: str):
        import onnxruntime

        if precision != "fp32":
            raise ValueError(f"onnxruntime runs the exported fp32 model; precision {precision!r}")
        options = onnxruntime.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = onnxruntime.InferenceSession(
            path, options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, image: np.ndarray) -> List[np.ndarray]:
        return self.session.run(None, {"image": image})


class _OpenVinoSession:
    PRECISIONS = {"fp32": "f32", "bf16": "bf16"}

    def __init__(self, path: str, num_threads: Optional[int], precision: str):
        import openvino

        if precision not in self.PRECISIONS:
            raise ValueError(f"OpenVINO precision must be one of {sorted(self.PRECISIONS)}")
        config = {"INFERENCE_PRECISION_HINT": self.PRECISIONS[precision]}
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = num_threads
        # (OpenVINO's CPU plugin would leave this thread a dangling alternate signal stack:
        # see yolact_d2.utils.signal_stack.)
        with preserved_signal_stack():
            self.model = openvino.Core().compile_model(path, "CPU", config)

    def __call__(self, image: np.ndarray) -> List[np.ndarray]:
        return list(self.model({"image": image}).values())


class _PyTorchSession:
    def __init__(self, path: str, num_threads: Optional[int], precision: str):
        import yolact_d2  # noqa: F401  (registers torch.ops.yolact_d2.fast_nms)

        if precision != "fp32":
            raise ValueError(f"a .pt2 program runs in fp32; precision {precision!r}")
        if num_threads:
            torch.set_num_threads(num_threads)
        self.module = torch.export.load(path).module()

    def __call__(self, image: np.ndarray) -> List[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in self.module(torch.from_numpy(image))]


_RUNTIMES_OF = {".pt2": ("pytorch",), ".onnx": ("onnxruntime", "openvino"), ".xml": ("openvino",)}

_SESSIONS = {
    "onnxruntime": _OnnxRuntimeSession,
    "openvino": _OpenVinoSession,
    "pytorch": _PyTorchSession,
}


class ExportedPredictor:
    """
    An exported YOLACT used like Detectron2's ``DefaultPredictor``: called on one BGR uint8
    image (H, W, 3), it returns ``{"instances": Instances}`` at the image's size with the fields
    the PyTorch model gives (``pred_boxes``, ``scores``, ``pred_classes``, ``pred_masks`` (D, H, W)
    bool, and ``mask_scores`` for YOLACT++). The file's metadata says the channel order its
    graph takes (the image is flipped to it, as ``DefaultPredictor`` does) and the mask
    threshold; the masks come out at prototype resolution and are pasted here, by the same code
    as the model's (:func:`~yolact_d2.modeling.paste.paste_instances`, with the settings of the
    config the file carries). A graph of the network alone (``tools/export_model.py --graph
    network``) returns the network's outputs, and everything after them runs here, by the
    model's own code (:func:`~yolact_d2.modeling.postprocessing.postprocess_predictions`).

    Example::

        predictor = ExportedPredictor("export/model.onnx", runtime="openvino")
        instances = predictor(cv2.imread("input.jpg"))["instances"]
    """

    def __init__(
        self,
        path: str,
        runtime: str = "onnxruntime",
        num_threads: Optional[int] = None,
        precision: str = "fp32",
    ):
        """
        Args:
            path (str): a .onnx file (runtime "onnxruntime" or "openvino") or a .pt2 file
                (runtime "pytorch"), written by ``tools/export_model.py``, or an int8 .xml
                (runtime "openvino") written by ``tools/quantize.py``.
            runtime (str): one of :data:`RUNTIMES`.
            num_threads (int or None): intra-op threads (None: the runtime's default).
            precision (str): "fp32", or "bf16" on OpenVINO (its own reduced-precision mode;
                for an int8 IR, the precision of the layers that are not quantised).
        """
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.path, self.runtime, self.precision = path, runtime, precision
        self.metadata = read_metadata(path)
        kind = ".pt2" if path.endswith(".pt2") else ".xml" if path.endswith(".xml") else ".onnx"
        if runtime not in _RUNTIMES_OF[kind]:
            raise ValueError(
                f"runtime {runtime!r} cannot run {path!r}: .pt2 programs run on 'pytorch', "
                "ONNX models on 'onnxruntime' or 'openvino', int8 OpenVINO IRs (.xml) on "
                "'openvino'"
            )
        if runtime == "openvino" and json.loads(self.metadata.get("deformable_conv", "false")):
            raise ValueError(
                f"{path!r} is a YOLACT++ model: its deformable convolutions are ONNX DeformConv "
                "(opset 19), which OpenVINO's ONNX reader does not support; run it with "
                "runtime='onnxruntime'"
            )
        # int8 IRs record how they were quantised; None for fp32 exports.
        self.quantization = json.loads(self.metadata.get("quantization", "null"))
        self.input_format = self.metadata["input_format"]
        cfg = exported_config(self.metadata)
        self.postprocess_settings = PostprocessSettings.from_config(cfg)
        # "pipeline": the graph returns detections; "network": its outputs are post-processed
        # here by the model's own code (files written before the key: pipelines).
        self.graph = self.metadata.get("graph", "pipeline")
        if self.graph == "network":
            y = cfg.MODEL.YOLACT
            self._input_size = int(y.INPUT_SIZE)
            self._preserve_aspect_ratio = bool(y.PRESERVE_ASPECT_RATIO)
            self._box_variances = tuple(y.BOX_VARIANCES)
            self._nms = self.postprocess_settings.build_nms(self._input_size)
        self.output_names = json.loads(self.metadata["outputs"])
        self.class_names = json.loads(self.metadata["class_names"])
        # A graph of one image size (MODEL.YOLACT.PRESERVE_ASPECT_RATIO), or None: any size.
        self.image_size = json.loads(self.metadata.get("image_size", "null"))
        self._session = _SESSIONS[runtime](path, num_threads, precision)

    def run(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        """
        The graph's raw outputs for an image already in its input format.

        Args:
            image (ndarray): (H, W, 3) uint8 in ``input_format`` order.

        Returns:
            dict[str, ndarray]: see :class:`~yolact_d2.deploy.YolactInferenceGraph`.
        """
        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        if self.image_size is not None and list(image.shape[:2]) != self.image_size:
            height, width = self.image_size
            raise ValueError(
                f"this export keeps the aspect ratio (MODEL.YOLACT.PRESERVE_ASPECT_RATIO) and "
                f"takes {height}x{width} images only, got {image.shape[0]}x{image.shape[1]}: "
                "export again with --image-size H W of your images"
            )
        return dict(zip(self.output_names, self._session(image)))

    def __call__(self, original_image: np.ndarray) -> Dict[str, Instances]:
        """
        Args:
            original_image (ndarray): (H, W, 3) uint8 BGR image, as ``DefaultPredictor`` takes.

        Returns:
            dict: {"instances": Instances} at the image's size.
        """
        return {"instances": self.instances(in_input_format(original_image, self.input_format))}

    def instances(self, image: np.ndarray) -> Instances:
        """
        Args:
            image (ndarray): (H, W, 3) uint8 in ``input_format`` order.

        Returns:
            Instances: at (H, W), masks pasted.
        """
        outputs = self.run(image)
        tensors = {name: torch.from_numpy(np.asarray(v)) for name, v in outputs.items()}
        size = tuple(image.shape[:2])
        if self.graph == "network":
            return self._postprocess_network(tensors, size)
        return paste_instances(tensors, size, self.postprocess_settings)

    def _postprocess_network(self, outputs: Dict[str, torch.Tensor], size) -> Instances:
        """The model's post-processing of a network graph's outputs for one image of ``size``."""
        batch = {name: outputs[name][None] for name in outputs if name != "priors"}
        batch["priors"] = outputs["priors"]
        side = self._input_size
        if self._preserve_aspect_ratio:
            content = aspect_preserving_size(size[0], size[1], side)
            batch["input_size"] = padded_input_size(*content, side)
            batch["content_sizes"] = [content]
        else:
            batch["input_size"] = (side, side)
        return postprocess_predictions(
            batch, [size], self.postprocess_settings, self._nms, self._box_variances
        )[0]

    def as_model(self) -> "ExportedModel":
        """The exported model as a Detectron2 model for evaluation (see :class:`ExportedModel`)."""
        return ExportedModel(self)


class ExportedModel:
    """
    An :class:`ExportedPredictor` called like a Detectron2 model in inference: on a list of
    dicts with "image" ((3, H, W) in the graph's input format, as Detectron2's test loader
    gives it with ``INPUT.MIN_SIZE_TEST`` 0) and optional "height"/"width", it returns a list
    of {"instances": Instances} at ("height", "width"). So ``inference_on_dataset`` and the
    COCO evaluator run on an exported model unchanged.
    """

    def __init__(self, predictor: ExportedPredictor):
        self.predictor = predictor

    def __call__(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        results = []
        for x in batched_inputs:
            image = x["image"]
            image = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
            image = image.transpose(1, 2, 0).round().clip(0, 255).astype(np.uint8)
            size = (x.get("height", image.shape[0]), x.get("width", image.shape[1]))
            if tuple(size) != image.shape[:2]:
                raise ValueError(
                    f"the exported graph resizes the image itself: feed it at its original size "
                    f"(got {image.shape[:2]} for an image of {tuple(size)}; set "
                    "INPUT.MIN_SIZE_TEST 0)"
                )
            results.append({"instances": self.predictor.instances(image)})
        return results
