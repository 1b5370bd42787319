# Copyright (c) yolact_d2 contributors.
"""
What an exported YOLACT carries besides its graph, written by the exporter and the quantiser and
read by :class:`~yolact_d2.deploy.ExportedPredictor`: the keys, where each file format keeps
them, and the post-processing settings they hold.
"""

import json
import os
from typing import Dict

import torch

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog

from yolact_d2.config import get_yolact_cfg
from yolact_d2.layers import ModulatedDeformConv2d
from yolact_d2.modeling.postprocessing import PostprocessSettings

from .graph import build_graph

__all__ = [
    "PT2_METADATA_FILE",
    "QUANTIZATION_KEY",
    "uses_deformable_conv",
    "deploy_metadata",
    "read_metadata",
    "postprocess_settings",
    "exported_config",
]

# Where a .pt2 file keeps the metadata (ONNX files keep it in metadata_props).
PT2_METADATA_FILE = "yolact_d2_metadata.json"
# rt_info section of an int8 OpenVINO IR holding the metadata (the ONNX file's keys, plus
# "quantization").
QUANTIZATION_KEY = "yolact_d2"


def uses_deformable_conv(model: torch.nn.Module) -> bool:
    """Whether the model has YOLACT++'s modulated deformable convolutions."""
    return any(isinstance(m, ModulatedDeformConv2d) for m in model.modules())


def deploy_metadata(
    cfg, model: torch.nn.Module, config_file: str = "", image_size=None, graph: str = "pipeline"
) -> Dict[str, str]:
    """
    What a runtime needs besides the graph, as strings (ONNX ``metadata_props``).

    Keys: "yolact_d2_version", "config_file", "meta_architecture", "input_format" ("RGB" or
    "BGR": the channel order the graph's image input is in), "input_size" (S), "class_names" and
    "category_ids" (JSON lists: the dataset's names and original ids of classes 0..C-1; ids
    1..C when the dataset gives none), "score_threshold", "nms_threshold", "top_k",
    "detections_per_image", "mask_threshold", "display_score_threshold", "outputs" (JSON list of
    the graph's output names), "mask_resolution" ("prototype": masks to paste), "config" (the
    full config as YAML), "image_size" (JSON [H, W]: the only image size the graph takes, with
    ``MODEL.YOLACT.PRESERVE_ASPECT_RATIO``; null: any), "graph" ("pipeline": the whole
    inference; "network": the network alone, see :data:`~yolact_d2.deploy.graph.GRAPHS`).

    Args:
        cfg (CfgNode): the config of the exported model.
        model (Yolact): the model.
        config_file (str): the config file it came from, for the record.
        image_size (tuple or None): the sample image's (H, W).
        graph (str): the exported form.
    """
    import yolact_d2

    y = cfg.MODEL.YOLACT
    num_classes = y.NUM_CLASSES
    names, ids = [str(i) for i in range(num_classes)], list(range(1, num_classes + 1))
    if cfg.DATASETS.TEST:
        meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        if len(meta.get("thing_classes", [])) == num_classes:
            names = list(meta.thing_classes)
        mapping = meta.get("thing_dataset_id_to_contiguous_id", None)
        if mapping and len(mapping) == num_classes:
            ids = [d for d, _ in sorted(mapping.items(), key=lambda item: item[1])]
    outputs = list(build_graph(model, graph).output_names)
    return {
        "yolact_d2_version": yolact_d2.__version__,
        "config_file": config_file,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "input_format": cfg.INPUT.FORMAT,
        "input_size": str(y.INPUT_SIZE),
        "class_names": json.dumps(names),
        "category_ids": json.dumps([int(i) for i in ids]),
        "score_threshold": repr(float(y.TEST.SCORE_THRESH)),
        "nms_threshold": repr(float(y.TEST.NMS_THRESH)),
        "top_k": str(y.TEST.TOP_K),
        "detections_per_image": str(y.TEST.DETECTIONS_PER_IMAGE),
        "mask_threshold": repr(float(y.TEST.MASK_THRESH)),
        "display_score_threshold": repr(float(y.TEST.DISPLAY_SCORE_THRESH)),
        "outputs": json.dumps(outputs),
        "mask_resolution": "prototype",
        "deformable_conv": json.dumps(uses_deformable_conv(model)),
        "image_size": json.dumps(
            [int(v) for v in image_size] if y.PRESERVE_ASPECT_RATIO and image_size else None
        ),
        "graph": graph,
        "config": cfg.dump(),
    }


def read_metadata(path: str) -> Dict[str, str]:
    """
    The metadata an exported file carries (see :func:`~yolact_d2.deploy.deploy_metadata`).

    Args:
        path (str): a .onnx or .pt2 file written by ``tools/export_model.py``, or an int8
            OpenVINO IR (.xml) written by ``tools/quantize.py``.

    Raises:
        FileNotFoundError, ValueError: no such file, or not a yolact_d2 export.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"exported model {path!r} does not exist")
    if path.endswith(".xml"):
        metadata = _openvino_ir_metadata(path)
    elif path.endswith(".pt2"):
        extra = {PT2_METADATA_FILE: ""}
        torch.export.load(path, extra_files=extra)
        text = extra[PT2_METADATA_FILE]
        metadata = json.loads(text) if text else {}
    else:
        import onnx

        try:
            proto = onnx.load(path, load_external_data=False)
        except Exception as e:
            raise ValueError(f"{path!r} is not an ONNX model: {e}") from e
        metadata = {p.key: p.value for p in proto.metadata_props}
    if "yolact_d2_version" not in metadata:
        raise ValueError(f"{path!r} carries no yolact_d2 metadata (not written by export_model)")
    return metadata


def _openvino_ir_metadata(path: str) -> Dict[str, str]:
    """The metadata section :func:`~yolact_d2.deploy.quantize_int8` wrote into an IR."""
    import openvino

    try:
        model = openvino.Core().read_model(path)
    except Exception as e:
        raise ValueError(f"{path!r} is not an OpenVINO IR: {_first_line(e)}") from e
    if not model.has_rt_info([QUANTIZATION_KEY]):
        return {}
    keys = model.get_rt_info([QUANTIZATION_KEY]).astype(dict)
    return {key: model.get_rt_info([QUANTIZATION_KEY, key]).astype(str) for key in keys}


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def exported_config(metadata: Dict[str, str]) -> CfgNode:
    """The full config an export carries ("config"), over the defaults of this version."""
    cfg = get_yolact_cfg()
    cfg.set_new_allowed(True)
    cfg.merge_from_other_cfg(CfgNode.load_cfg(metadata["config"]))
    return cfg


def postprocess_settings(metadata: Dict[str, str]) -> PostprocessSettings:
    """
    The model's post-processing settings (``MODEL.YOLACT.TEST``, ``MODEL.YOLACT.MASKIOU``) from
    the config an export carries, so that a runtime pastes masks exactly as the model would
    (``MAX_DENSE_MASK_BYTES`` included).
    """
    return PostprocessSettings.from_config(exported_config(metadata))
