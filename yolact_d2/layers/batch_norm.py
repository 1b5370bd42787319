# Copyright (c) yolact_d2 contributors.
"""
Frozen BatchNorm as the reference freezes it: ``nn.BatchNorm2d`` kept in eval mode (running
statistics used and never updated) with its affine parameters not trained.

Detectron2's :class:`~detectron2.layers.FrozenBatchNorm2d` folds the statistics into a scale
and a bias, which differs from an eval-mode ``nn.BatchNorm2d`` in the last bits; the reference
(``Yolact.freeze_bn`` in dbolya/yolact) keeps ``nn.BatchNorm2d`` and calls ``.train(False)`` on
it, and so does :func:`freeze_batch_norm`, which makes frozen training bit-identical to it.
"""

from typing import List

from torch import nn

__all__ = ["EvalModeBatchNorm2d", "freeze_batch_norm"]


class EvalModeBatchNorm2d(nn.BatchNorm2d):
    """
    A ``BatchNorm2d`` that stays in eval mode whatever ``.train()`` asks, so that the trainer's
    ``model.train()`` (at start and after every evaluation) does not unfreeze it. Its state dict
    is that of ``nn.BatchNorm2d`` (same keys), so checkpoints load either way.
    """

    def train(self, mode: bool = True):
        return super().train(False)


def freeze_batch_norm(module: nn.Module) -> List[str]:
    """
    Freezes every ``nn.BatchNorm2d`` (and subclass, e.g. Detectron2's NaiveSyncBatchNorm) and
    ``nn.SyncBatchNorm`` inside ``module`` in place (in eval mode all of them compute the
    same): its class becomes :class:`EvalModeBatchNorm2d` (the parameters and buffers are the
    same tensors), it is put in eval mode and its weight and bias stop requiring gradients.
    Call it before the optimizer is built, so that the frozen parameters are left out of it.

    Args:
        module (nn.Module): a model or a part of one.

    Returns:
        list[str]: the names of the frozen layers.
    """
    frozen = []
    for name, child in module.named_modules():
        if isinstance(child, (nn.BatchNorm2d, nn.SyncBatchNorm)) and not isinstance(
            child, EvalModeBatchNorm2d
        ):
            child.__class__ = EvalModeBatchNorm2d
            child.train(False)
            for parameter in (child.weight, child.bias):
                if parameter is not None:
                    parameter.requires_grad_(False)
            frozen.append(name)
    return frozen
