# Copyright (c) yolact_d2 contributors.
"""
Exporting a YOLACT - the whole pipeline of :class:`YolactInferenceGraph`, or the network alone
(:class:`YolactNetworkGraph`) - as an ONNX model or a ``torch.export`` program (.pt2), with what a
runtime needs to use it stored inside the file.
"""

import json
import logging
import numpy as np
from typing import Dict, Optional

import torch

from yolact_d2.utils.file_io import atomic_open

from .graph import GRAPHS, build_graph
from .metadata import PT2_METADATA_FILE, deploy_metadata, uses_deformable_conv

__all__ = [
    "FORMATS",
    "MAX_IMAGE_SIDE",
    "build_export_model",
    "export_model",
    "export_program",
    "export_onnx",
    "program_to_onnx",
    "export_pt2",
]

logger = logging.getLogger(__name__)

# Image heights and widths the exported graph accepts: 2 .. MAX_IMAGE_SIDE pixels.
MAX_IMAGE_SIDE = 16384


def _sample_image(sample_image: Optional[np.ndarray]) -> torch.Tensor:
    if sample_image is None:
        # Only shapes matter for tracing; 480 x 640 specialises neither side.
        sample_image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    if sample_image.ndim != 3 or sample_image.shape[2] != 3 or sample_image.dtype != np.uint8:
        raise ValueError(
            f"the sample image must be (H, W, 3) uint8, got {sample_image.shape} "
            f"{sample_image.dtype}"
        )
    if min(sample_image.shape[:2]) < 2:
        raise ValueError(f"the sample image must be at least 2 x 2, got {sample_image.shape}")
    return torch.from_numpy(np.ascontiguousarray(sample_image))


def export_program(
    model: torch.nn.Module, sample_image: Optional[np.ndarray] = None, graph: str = "pipeline"
) -> torch.export.ExportedProgram:
    """
    ``torch.export`` of the whole pipeline with dynamic image height and width.

    With ``MODEL.YOLACT.PRESERVE_ASPECT_RATIO`` the network's input size, the priors and the
    mask crop follow from the image's size, so the graph is for images of the sample image's
    size only (a camera's or a video's frames): export with a sample of that size
    (``tools/export_model.py --sample-image`` or ``--image-size H W``). The size is in the
    metadata ("image_size") and predictors refuse other sizes with a clear error.

    Args:
        model (Yolact): eval-mode model (see :class:`YolactInferenceGraph` for what it needs).
        sample_image (ndarray or None): (H, W, 3) uint8 in the model's input format, used to
            trace (any content; None: a random 480 x 640 image).
        graph (str): a key of :data:`~yolact_d2.deploy.graph.GRAPHS`: "pipeline" (the whole
            inference) or "network" (the network alone).

    Returns:
        ExportedProgram: takes "image" (H, W, 3) uint8 and returns the graph's outputs.
    """
    module = build_graph(model, graph).eval()
    height = torch.export.Dim("height", min=2, max=MAX_IMAGE_SIDE)
    width = torch.export.Dim("width", min=2, max=MAX_IMAGE_SIDE)
    dynamic = {"image": {0: height, 1: width}}
    with torch.no_grad():
        return torch.export.export(
            module,
            (_sample_image(sample_image).to(model.device),),
            dynamic_shapes=None if model.preserve_aspect_ratio else dynamic,
            strict=False,
        )


def export_onnx(
    model: torch.nn.Module,
    path: str,
    metadata: Dict[str, str],
    sample_image: Optional[np.ndarray] = None,
    opset: Optional[int] = None,
) -> str:
    """
    Writes the whole pipeline as one ONNX model (standard operators only), atomically.

    Args:
        model (Yolact): see :func:`export_program`.
        path (str): the .onnx file.
        metadata (dict[str, str]): stored as the model's ``metadata_props``
            (:func:`deploy_metadata`).
        sample_image (ndarray or None): see :func:`export_program`.
        opset (int or None): the ONNX opset; None: the lowest that holds the model
            (:data:`~yolact_d2.deploy.onnx_ops.MIN_OPSET`, or ``MIN_OPSET_DEFORMABLE`` for
            YOLACT++'s deformable convolutions).

    Returns:
        str: ``path``.
    """
    import onnx

    from . import onnx_ops

    lowest = onnx_ops.MIN_OPSET_DEFORMABLE if uses_deformable_conv(model) else onnx_ops.MIN_OPSET
    if opset is None:
        opset = lowest
    elif opset < lowest:
        raise ValueError(
            f"opset {opset} is too low for this model: it needs at least {lowest}"
            + (" (ONNX DeformConv)" if lowest == onnx_ops.MIN_OPSET_DEFORMABLE else "")
        )
    outputs = json.loads(metadata["outputs"])
    graph = metadata.get("graph", "pipeline")
    program = export_program(model, sample_image, graph)
    proto = program_to_onnx(program, opset, ["image"], outputs)
    proto.doc_string = (
        "YOLACT (yolact_d2): image (H, W, 3) uint8 in the input_format channel order -> "
        + ", ".join(outputs)
        + (
            "; masks are soft, at prototype resolution, to be stretched to the image and "
            "thresholded at mask_threshold"
            if graph == "pipeline"
            else "; the network alone: post-process with yolact_d2's ExportedPredictor"
        )
    )
    onnx.helper.set_model_props(proto, metadata)
    with atomic_open(path) as f:
        f.write(proto.SerializeToString())
    return path


def program_to_onnx(program: torch.export.ExportedProgram, opset: int, input_names, output_names):
    """
    An exported program as an ONNX ``ModelProto`` of standard operators: Fast NMS decomposed
    and the remaining gaps translated by :mod:`yolact_d2.deploy.onnx_ops`.

    Args:
        program (ExportedProgram): from ``torch.export``.
        opset (int): the ONNX opset.
        input_names, output_names (list[str]): names of the graph's inputs and outputs.
    """
    from . import onnx_ops

    program = program.run_decompositions(
        {**torch.export.default_decompositions(), **onnx_ops.DECOMPOSITIONS}
    )
    onnx_program = torch.onnx.export(
        program,
        dynamo=True,
        opset_version=opset,
        custom_translation_table=onnx_ops.TRANSLATIONS,
        input_names=list(input_names),
        output_names=list(output_names),
        verbose=False,
    )
    return onnx_program.model_proto


def export_pt2(
    model: torch.nn.Module,
    path: str,
    metadata: Dict[str, str],
    sample_image: Optional[np.ndarray] = None,
) -> str:
    """
    Writes the whole pipeline as a ``torch.export`` program (Fast NMS stays the registered op
    ``torch.ops.yolact_d2.fast_nms``: load it with yolact_d2 imported), atomically.

    Args and returns: as :func:`export_onnx` (the metadata goes to the extra file
    :data:`PT2_METADATA_FILE`).
    """
    program = export_program(model, sample_image, metadata.get("graph", "pipeline"))
    with atomic_open(path) as f:
        torch.export.save(program, f, extra_files={PT2_METADATA_FILE: json.dumps(metadata)})
    return path


FORMATS = {"onnx": "model.onnx", "pt2": "model.pt2"}


def build_export_model(cfg) -> torch.nn.Module:
    """
    The model of ``cfg`` as it is exported: on CPU, the exact fp32 path, Fast NMS, weights from
    ``MODEL.WEIGHTS`` (random when it is ""), eval mode.
    """
    from detectron2.modeling import build_model

    from yolact_d2.checkpoint.checkpointer import YolactCheckpointer

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.YOLACT.FAST_CPU_INFERENCE:
        logger.info("exporting the exact fp32 model (MODEL.YOLACT.FAST_CPU_INFERENCE ignored)")
        cfg.MODEL.YOLACT.FAST_CPU_INFERENCE = False
    model = build_model(cfg).eval()
    YolactCheckpointer(model, allow_mismatch=cfg.MODEL.YOLACT.ALLOW_WEIGHTS_MISMATCH).load(
        cfg.MODEL.WEIGHTS
    )
    return model


def export_model(
    cfg,
    model: torch.nn.Module,
    fmt: str,
    output_dir: str,
    sample_image: Optional[np.ndarray] = None,
    config_file: str = "",
    graph: str = "pipeline",
) -> str:
    """
    Writes ``output_dir/model.onnx`` or ``output_dir/model.pt2`` with its metadata.

    Args:
        cfg (CfgNode): the model's config.
        model (Yolact): from :func:`build_export_model`.
        fmt (str): "onnx" or "pt2".
        output_dir (str): created if missing.
        sample_image (ndarray or None): (H, W, 3) uint8 in ``cfg.INPUT.FORMAT`` order.
        config_file (str): recorded in the metadata.
        graph (str): "pipeline" (the whole inference, standard operators only: any ONNX
            runtime) or "network" (the network alone; :class:`ExportedPredictor` runs the
            model's own post-processing after it, in PyTorch): see
            :data:`~yolact_d2.deploy.graph.GRAPHS`.

    Returns:
        str: the written file.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {sorted(GRAPHS)}, got {graph!r}")
    path = f"{output_dir}/{FORMATS[fmt]}"
    image_size = _sample_image(sample_image).shape[:2]
    metadata = deploy_metadata(cfg, model, config_file, image_size, graph)
    if fmt == "onnx":
        if uses_deformable_conv(model):
            logger.warning(
                "YOLACT++: the deformable convolutions are exported as ONNX DeformConv (opset "
                "19). onnxruntime runs it; OpenVINO's ONNX reader does not support DeformConv, "
                "so this file cannot run on OpenVINO."
            )
        return export_onnx(model, path, metadata, sample_image)
    return export_pt2(model, path, metadata, sample_image)
