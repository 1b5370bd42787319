# Copyright (c) yolact_d2 contributors.
"""The optimizer of YOLACT training: the reference's SGD, or AdamW for short schedules."""

from typing import Optional

import torch

from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping

__all__ = ["OPTIMIZERS", "build_yolact_optimizer", "full_model_max_grad_norm"]

# SOLVER.OPTIMIZER values.
OPTIMIZERS = ("SGD", "ADAMW")
# SOLVER.CLIP_GRADIENTS.CLIP_TYPE that clips the norm of all gradients together (as DETR's
# Detectron2 wrapper names it); "value" and "norm" are Detectron2's per-parameter clipping.
FULL_MODEL = "full_model"


def build_yolact_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """
    Builds ``SOLVER.OPTIMIZER`` over Detectron2's parameter groups, where every group states
    its weight decay, so that groups with equal hyper-parameters merge: with Base-YOLACT.yaml
    this is the reference's single SGD group (lr, momentum 0.9, weight decay 5e-4 on all
    parameters, BatchNorm and biases included).

    * "SGD": ``torch.optim.SGD`` with ``SOLVER.MOMENTUM`` and ``SOLVER.NESTEROV``.
    * "ADAMW": ``torch.optim.AdamW`` with ``SOLVER.ADAM_BETAS`` (decoupled weight decay
      ``SOLVER.WEIGHT_DECAY*``). Not in the reference; it trains small models from random
      weights much faster in short schedules (the synthetic demo uses it).

    Detectron2's per-parameter clipping (``CLIP_TYPE`` "value" or "norm") wraps the optimizer;
    "full_model" is done by the step trainer (see :func:`full_model_max_grad_norm`).

    Args:
        cfg (CfgNode): a full config.
        model (nn.Module): the model to optimise.

    Returns:
        torch.optim.Optimizer
    """
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name not in OPTIMIZERS:
        raise ValueError(
            f"SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r}: expected one of {OPTIMIZERS}."
        )
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    if name == "SGD":
        optimizer = torch.optim.SGD(
            params,
            lr=cfg.SOLVER.BASE_LR,
            momentum=cfg.SOLVER.MOMENTUM,
            nesterov=cfg.SOLVER.NESTEROV,
        )
    else:
        optimizer = torch.optim.AdamW(
            params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.ADAM_BETAS)
        )
    if full_model_max_grad_norm(cfg) is not None:
        return optimizer
    return maybe_add_gradient_clipping(cfg, optimizer)


def full_model_max_grad_norm(cfg) -> Optional[float]:
    """
    Returns:
        float or None: ``SOLVER.CLIP_GRADIENTS.CLIP_VALUE`` when gradient clipping is enabled
        with ``CLIP_TYPE`` "full_model" (the L2 norm of all gradients together is clipped to
        it; ``NORM_TYPE`` must be 2), else None.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED or clip.CLIP_TYPE != FULL_MODEL:
        return None
    if clip.NORM_TYPE != 2.0:
        raise ValueError(
            f"SOLVER.CLIP_GRADIENTS.NORM_TYPE={clip.NORM_TYPE}: CLIP_TYPE 'full_model' clips the "
            "L2 norm; set NORM_TYPE 2.0."
        )
    if not clip.CLIP_VALUE > 0:
        raise ValueError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE={clip.CLIP_VALUE}: the largest total gradient norm "
            "must be positive."
        )
    return float(clip.CLIP_VALUE)
