# Copyright (c) yolact_d2 contributors.
"""
int8 post-training quantisation of an exported YOLACT with OpenVINO's NNCF: the convolutions of
the backbone, FPN, prediction head and protonet get int8 weights (per output channel) and int8
activations (each activation's range the smallest and largest value it takes over a few training
images, :data:`ACTIVATION_RANGES`), and so do the backbone's residual additions; the convolution
of the image itself (the backbone's stem, 3 input channels) and everything after the network
(box decoding, Fast NMS, mask assembly ``P C^T``, the crop) stay in floating point. The result
is an OpenVINO IR (``model_int8.xml`` + ``.bin``) carrying the ONNX file's yolact_d2 metadata,
which :class:`~yolact_d2.deploy.ExportedPredictor` runs on ``runtime="openvino"``.

Why NNCF and not PyTorch's PT2E/x86 path: see docs/BENCHMARKS.md, "int8: why NNCF and not PT2E"
(PT2E's quantiser moved out of PyTorch into ``torchao`` and needs ``torch.compile`` at every
load).
"""

import json
import logging
import numpy as np
import os
import shutil
import tempfile
from typing import Iterable, List, Optional

from yolact_d2.data.image_io import in_input_format
from yolact_d2.utils.signal_stack import preserved_signal_stack

from .metadata import QUANTIZATION_KEY, read_metadata
from .stages import onnx_node_stages

__all__ = ["INT8_FILE", "QUANTIZATION_KEY", "quantize_int8"]

logger = logging.getLogger(__name__)

INT8_FILE = "model_int8.xml"
# The OpenVINO operations given int8 inputs and weights.
_QUANTISED_TYPES = {"Convolution", "GroupConvolution"}
# Also given int8 inputs inside the backbone: the residual additions and the stem's pooling. A
# block's output then feeds both the next block's convolutions and its shortcut as one int8
# tensor, which OpenVINO produces inside the convolution that computes it, instead of leaving
# it in float and quantising it on its own before every next convolution (doing without those
# standalone quantisations took 14% off the int8 R50-550 network's time on a VNNI CPU,
# docs/BENCHMARKS.md).
_BACKBONE_QUANTISED_TYPES = {"Add", "MaxPool"}
_NOT_COMPUTED = {"Parameter", "Constant", "Result"}
# How an activation's int8 range is taken from the calibration images: the minimum and maximum
# over all of them (NNCF's "MINMAX"), not NNCF's default for per-tensor activations, the mean over
# the images of each one's minimum and maximum ("MEAN_MINMAX"), which clips every image whose
# activations reach further than the average. On the trained R50-320 (tiny_coco overfit, 8
# calibration images) that clipping cost 4.5 mask AP (53.0 fp32, 48.5 int8); with the full range
# int8 scores 52.8 (docs/BENCHMARKS.md).
ACTIVATION_RANGES = "MINMAX"


def image_convolutions(model) -> List[str]:
    """
    The friendly names of the convolutions that read the image: 3 input channels (the stem of
    every backbone here). They stay in floating point: with 3 input channels an int8 kernel
    gained no measurable time (R50-550 on a VNNI CPU), and with the earlier, clipping activation
    ranges quantising the stem cost the trained R50-320 0.7 mask AP (docs/BENCHMARKS.md).

    Args:
        model (openvino.Model): the fp32 model read from the ONNX file.
    """
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in _QUANTISED_TYPES:
            continue
        channels = op.input(0).get_partial_shape()[1]
        if channels.is_static and channels.get_length() == 3:
            names.append(op.get_friendly_name())
    return names


def float_operations(model, onnx_path: str) -> List[str]:
    """
    The friendly names of the operations NNCF leaves in floating point: everything but the
    convolutions (:data:`_QUANTISED_TYPES`) and the backbone's residual additions and pooling
    (:data:`_BACKBONE_QUANTISED_TYPES`, found by the module hierarchy of the ONNX nodes), plus the
    convolutions that read the image (:func:`image_convolutions`).

    Args:
        model (openvino.Model): the fp32 model read from ``onnx_path``.
        onnx_path (str): the exported ONNX file (its nodes carry the module hierarchy).
    """
    stages = onnx_node_stages(onnx_path)
    names = []
    for op in model.get_ordered_ops():
        kind, name = op.get_type_name(), op.get_friendly_name()
        if kind in _QUANTISED_TYPES or kind in _NOT_COMPUTED:
            continue
        if kind in _BACKBONE_QUANTISED_TYPES and stages.get(name) == "backbone":
            continue
        names.append(name)
    return names + image_convolutions(model)


def _save_ir_atomically(model, path: str) -> None:
    """``openvino.save_model`` to a temporary folder next to ``path``, then both files moved."""
    import openvino

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".int8_", dir=directory)
    try:
        xml = os.path.join(staging, os.path.basename(path))
        openvino.save_model(model, xml, compress_to_fp16=False)
        bin_name = os.path.splitext(os.path.basename(path))[0] + ".bin"
        # The weights first: a reader never finds the new .xml next to an old .bin.
        os.replace(os.path.join(staging, bin_name), os.path.join(directory, bin_name))
        os.replace(xml, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def quantize_int8(
    onnx_path: str,
    calibration_images: Iterable[np.ndarray],
    output_path: Optional[str] = None,
    fast_bias_correction: bool = True,
) -> str:
    """
    Quantises an exported YOLACT (``tools/export_model.py --format onnx``) to int8.

    Args:
        onnx_path (str): the fp32 ONNX file.
        calibration_images (iterable[ndarray]): BGR uint8 images (a few dozen training images;
            each activation's range is its minimum and maximum over all of them).
        output_path (str or None): the IR to write (default: ``model_int8.xml`` next to
            ``onnx_path``); written atomically.
        fast_bias_correction (bool): NNCF's bias correction (recommended by NNCF).

    Returns:
        str: the written .xml file.
    """
    metadata = read_metadata(onnx_path)
    if json.loads(metadata.get("deformable_conv", "false")):
        raise ValueError(
            f"{onnx_path!r} is a YOLACT++ model: OpenVINO's ONNX reader does not support its "
            "DeformConv, so it cannot be quantised with NNCF here"
        )
    images: List[np.ndarray] = [
        in_input_format(i, metadata["input_format"]) for i in calibration_images
    ]
    fixed_size = json.loads(metadata.get("image_size", "null"))
    if fixed_size is not None:  # a graph of one image size (aspect-ratio-preserving export)
        import cv2

        height, width = fixed_size
        images = [cv2.resize(i, (width, height), interpolation=cv2.INTER_AREA) for i in images]
    if not images:
        raise ValueError("quantize_int8 needs at least one calibration image")
    output_path = output_path or os.path.join(os.path.dirname(onnx_path), INT8_FILE)
    import nncf
    import openvino
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    model = openvino.Core().read_model(onnx_path)
    # The convolutions and the backbone's residual additions: NNCF would also quantise the inputs
    # of other elementwise ops, resizes and MatMuls, which here include the box decoding, Fast
    # NMS's IoUs and the mask assembly P C^T (quantising those cost the main job's model 16 mask
    # AP). Not the stem.
    float_ops = float_operations(model, onnx_path)
    float_convolutions = image_convolutions(model)
    kept_float = set(float_ops)
    int8_elementwise = sorted(
        op.get_friendly_name()
        for op in model.get_ops()
        if op.get_type_name() in _BACKBONE_QUANTISED_TYPES
        and op.get_friendly_name() not in kept_float
    )
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)  # one INFO line per operation left in float
    try:
        # NNCF compiles models on OpenVINO's CPU plugin: see yolact_d2.utils.signal_stack.
        with preserved_signal_stack():
            quantized = nncf.quantize(
                model,
                nncf.Dataset(images, lambda image: {"image": image}),
                subset_size=len(images),
                fast_bias_correction=fast_bias_correction,
                ignored_scope=nncf.IgnoredScope(names=float_ops, validate=False),
                advanced_parameters=AdvancedQuantizationParameters(
                    activations_range_estimator_params=getattr(
                        RangeEstimatorParametersSet, ACTIVATION_RANGES
                    )
                ),
            )
    finally:
        nncf_logger.setLevel(level)
    info = dict(metadata)
    info["quantization"] = json.dumps(
        {
            "method": "NNCF post-training quantisation (int8 weights and activations)",
            "float_convolutions": float_convolutions,
            "int8_elementwise": int8_elementwise,
            "nncf_version": nncf.__version__,
            "source": os.path.basename(onnx_path),
            "calibration_images": len(images),
            "activation_ranges": ACTIVATION_RANGES,
        }
    )
    for key, value in info.items():
        quantized.set_rt_info(value, [QUANTIZATION_KEY, key])
    _save_ir_atomically(quantized, output_path)
    logger.info(f"int8 model written to {output_path} ({len(images)} calibration images)")
    return output_path
