# Copyright (c) yolact_d2 contributors.
"""
The prototype view (the paper's Figure 5): an image's k prototypes, and for its best detections
the mask assembled from them beside the coefficients that weighted them.
"""

import numpy as np
from typing import Dict, Sequence

import torch

from yolact_d2.data.image_io import model_input
from yolact_d2.modeling.mask_assembly import assemble_masks

__all__ = ["prototype_view", "render_prototype_view"]


def prototype_view(model, bgr: np.ndarray, top_k: int = 4) -> Dict[str, np.ndarray]:
    """
    Runs a YOLACT on one image and returns what its masks are made of.

    Args:
        model (Yolact): an eval-mode model.
        bgr (ndarray): (H, W, 3) uint8 BGR image.
        top_k (int): detections to return (the best-scored).

    Returns:
        dict of ndarrays: "prototypes" (k, h, w) (ReLU outputs), "coefficients" (n, k),
        "masks" (n, h, w) assembled soft masks sigmoid(P c) before the crop, "cropped_masks"
        (n, h, w) as the model outputs them (cropped by the box), "boxes" (n, 4) relative XYXY,
        "scores" (n,), "classes" (n,); n <= top_k.
    """
    with torch.no_grad():
        outputs = model.predict(model.preprocess_image([model_input(bgr, model.input_format)]))
        (detections,) = model.postprocess(outputs, [bgr.shape[:2]], until="masks")
        detections = {key: value[:top_k] for key, value in detections.items()}
        prototypes = outputs["prototypes"][0]
        coefficients = outputs["coefficients"][0][detections["indices"]]
        return {
            "prototypes": prototypes.cpu().numpy(),
            "coefficients": coefficients.cpu().numpy(),
            "masks": assemble_masks(prototypes, coefficients).cpu().numpy(),
            "cropped_masks": detections["masks"].cpu().numpy(),
            "boxes": detections["boxes"].cpu().numpy(),
            "scores": detections["scores"].cpu().numpy(),
            "classes": detections["classes"].cpu().numpy(),
        }


def render_prototype_view(
    view: Dict[str, np.ndarray], bgr: np.ndarray, class_names: Sequence[str] = ()
) -> np.ndarray:
    """
    One picture of :func:`prototype_view`: the image, the prototypes as a grid of heat maps,
    and per detection its assembled mask (with the box) beside a bar chart of its coefficients.

    Returns:
        ndarray: (H, W, 3) uint8 RGB picture.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prototypes, num = view["prototypes"], len(view["scores"])
    k = len(prototypes)
    columns = 8
    rows = -(-k // columns)
    figure = plt.figure(figsize=(2 * columns, 2 * (rows + 1) + 2.2 * num))
    grid = figure.add_gridspec(rows + 1 + num, columns)
    axis = figure.add_subplot(grid[0, : columns // 2])
    axis.imshow(bgr[:, :, ::-1])
    axis.set_title("image")
    axis.axis("off")
    for i in range(k):
        axis = figure.add_subplot(grid[1 + i // columns, i % columns])
        axis.imshow(prototypes[i], cmap="viridis")
        axis.set_title(f"prototype {i}", fontsize=8)
        axis.axis("off")
    h, w = prototypes.shape[1:]
    for d in range(num):
        row = rows + 1 + d
        cls = int(view["classes"][d])
        name = class_names[cls] if cls < len(class_names) else str(cls)
        axis = figure.add_subplot(grid[row, :2])
        axis.imshow(view["masks"][d], cmap="magma", vmin=0, vmax=1)
        x1, y1, x2, y2 = view["boxes"][d] * np.array([w, h, w, h])
        axis.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="cyan"))
        axis.set_title(f"{name} {view['scores'][d]:.2f}: sigmoid(P c)", fontsize=8)
        axis.axis("off")
        axis = figure.add_subplot(grid[row, 2:])
        coefficients = view["coefficients"][d]
        axis.bar(range(k), coefficients, color=np.where(coefficients >= 0, "tab:red", "tab:blue"))
        axis.set_ylim(-1, 1)
        axis.set_xticks(range(k))
        axis.tick_params(labelsize=6)
        axis.set_title("coefficients c (tanh)", fontsize=8)
    figure.tight_layout()
    figure.canvas.draw()
    picture = np.asarray(figure.canvas.buffer_rgba())[:, :, :3].copy()
    plt.close(figure)
    return picture
