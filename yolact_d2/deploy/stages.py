# Copyright (c) yolact_d2 contributors.
"""
The stage of YOLACT each node of an exported ONNX graph belongs to, read from the module
hierarchy ``torch.onnx`` records in every node's metadata (``pkg.torch.onnx.class_hierarchy``).
The profiler attributes runtime time by it; int8 quantisation chooses by it which elementwise
operations run in int8.
"""

from typing import Dict

__all__ = ["STAGES", "onnx_node_stages"]

# Module classes of the model, in the order they are tested (a node's hierarchy lists its
# enclosing modules outermost first; the innermost YOLACT part decides).
_STAGE_OF_MODULE = [
    ("YolactMaskBranch", "protonet"),
    ("YolactHead", "head"),
    ("ResNet", "backbone"),
    ("DarkNet", "backbone"),
    ("YolactFPN", "fpn"),
]
STAGES = ("preprocess", "backbone", "fpn", "head", "protonet", "postprocess")


def onnx_node_stages(onnx_path: str) -> Dict[str, str]:
    """
    {ONNX node or output name: stage}: "preprocess" (the nodes before the first backbone node:
    resize, normalisation), "backbone", "fpn", "head", "protonet", or "postprocess" (priors,
    box decoding, score pre-filter, Fast NMS, mask assembly and crop: the graph's own code
    outside the network's modules). Empty for a graph without the hierarchy metadata.
    """
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    stages, seen_network, any_hierarchy = {}, False, False
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        hierarchy = meta.get("pkg.torch.onnx.class_hierarchy", "")
        any_hierarchy = any_hierarchy or bool(hierarchy)
        stage = None
        for module, name in _STAGE_OF_MODULE:
            if module in hierarchy:
                stage = name
                break
        if stage is None:
            stage = "postprocess" if seen_network else "preprocess"
        else:
            seen_network = True
        stages[node.name] = stage
        for output in node.output:  # onnxruntime names fused nodes after their outputs
            stages.setdefault(output, stage)
    return stages if any_hierarchy else {}
