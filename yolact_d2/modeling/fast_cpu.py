# Copyright (c) yolact_d2 contributors.
"""
Inference-only rewrites behind ``MODEL.YOLACT.FAST_CPU_INFERENCE``: BatchNorm folded into the
preceding convs and channels_last weights (and optionally ``torch.compile``), applied to a
private copy of the network so that the model's own parameters (training, checkpoints) are never
touched.
"""

import copy
import itertools
import logging
from typing import Iterable, Optional, Tuple

import torch
from torch import nn

from detectron2.layers import Conv2d, FrozenBatchNorm2d

from yolact_d2.layers import ModulatedDeformConv2d

__all__ = [
    "fold_batch_norm_",
    "fold_batch_norms_",
    "cast_conv_parameters_",
    "resolve_fast_cpu_dtype",
    "CompiledModule",
    "InferenceCopy",
]

logger = logging.getLogger(__name__)

# Convs whose forward is conv -> ``self.norm`` -> ``self.activation`` with ``self.weight`` and
# ``self.bias``: folding the norm into weight and bias leaves that forward exact.
_CONVS_WITH_NORM = (Conv2d, ModulatedDeformConv2d)


def _is_foldable_norm(norm: Optional[nn.Module]) -> bool:
    """BatchNorm in eval mode with running statistics (SyncBN subclasses BatchNorm2d)."""
    if isinstance(norm, FrozenBatchNorm2d):
        return True
    return (
        isinstance(norm, nn.BatchNorm2d)
        and not norm.training
        and norm.track_running_stats
        and norm.running_mean is not None
    )


@torch.no_grad()
def fold_batch_norm_(conv: nn.Module) -> bool:
    """
    Folds ``conv.norm`` (an eval-mode BatchNorm) into ``conv.weight`` and ``conv.bias`` and
    removes it: ``gamma * (W x + b - mean) / sqrt(var + eps) + beta`` becomes ``W' x + b'`` with
    ``W' = W * s``, ``b' = (b - mean) * s + beta`` and ``s = gamma / sqrt(var + eps)``, computed
    in float64.

    Args:
        conv (nn.Module): a :class:`detectron2.layers.Conv2d` or
            :class:`ModulatedDeformConv2d`; changed in place.

    Returns:
        bool: whether a norm was folded.
    """
    norm = getattr(conv, "norm", None)
    if not isinstance(conv, _CONVS_WITH_NORM) or not _is_foldable_norm(norm):
        return False
    weight = conv.weight.double()
    bias = conv.bias.double() if conv.bias is not None else weight.new_zeros(weight.shape[0])
    gamma = norm.weight.double() if norm.weight is not None else torch.ones_like(bias)
    beta = norm.bias.double() if norm.bias is not None else torch.zeros_like(bias)
    scale = gamma * torch.rsqrt(norm.running_var.double() + norm.eps)
    new_weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
    new_bias = (bias - norm.running_mean.double()) * scale + beta
    conv.weight = nn.Parameter(new_weight.to(conv.weight.dtype), requires_grad=False)
    conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype), requires_grad=False)
    conv.norm = None
    return True


def fold_batch_norms_(module: nn.Module) -> int:
    """
    :func:`fold_batch_norm_` on every conv of ``module`` (in place).

    Returns:
        int: number of norms folded.
    """
    return sum(fold_batch_norm_(m) for m in module.modules())


def resolve_fast_cpu_dtype(
    name: str, flags: Optional[Iterable[str]] = None
) -> Optional[torch.dtype]:
    """
    The autocast dtype of the fast CPU path for ``MODEL.YOLACT.FAST_CPU_DTYPE``.

    Args:
        name (str): "bfloat16", "float32" or "auto": bfloat16 where the CPU has bf16 hardware
            (AMX tiles, or AVX-512 with ``avx512_bf16``: oneDNN's bf16 convs then beat its fp32
            ones, 2.6x on R50 without AMX with torch 2.14), float32 elsewhere (plain AVX-512
            or AVX2 emulate bf16 and run slower than fp32).
        flags (iterable[str] or None): the CPU's flags (default: this machine's).

    Returns:
        torch.dtype or None: the autocast dtype, None for float32 (no autocast).
    """
    if name == "auto":
        from yolact_d2.utils.cpu import cpu_flags, has_amx

        present = set(cpu_flags() if flags is None else flags)
        native = "avx512_bf16" in present or "amx_bf16" in present
        name = "bfloat16" if native or (flags is None and has_amx()) else "float32"
    if name not in ("bfloat16", "float32"):
        raise ValueError(
            f"MODEL.YOLACT.FAST_CPU_DTYPE must be 'auto', 'bfloat16' or 'float32', got {name!r}"
        )
    return torch.bfloat16 if name == "bfloat16" else None


def _state_signature(modules: Iterable[nn.Module]) -> Tuple:
    """Identity, storage and in-place version of every parameter and buffer."""
    tensors = itertools.chain.from_iterable(
        itertools.chain(m.parameters(), m.buffers()) for m in modules
    )
    return tuple((id(t), t.data_ptr(), t._version) for t in tensors)


@torch.no_grad()
def cast_conv_parameters_(module: nn.Module, dtype: torch.dtype) -> None:
    """
    Casts the weight and bias of every ``nn.Conv2d`` in ``module`` to ``dtype`` (in place). Under
    autocast to ``dtype`` this is numerically a no-op (autocast casts conv arguments to it on
    every call, with the same rounding) that saves those casts.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.to(dtype)
            if m.bias is not None:
                m.bias.data = m.bias.data.to(dtype)


class CompiledModule(nn.Module):
    """
    ``torch.compile`` (inductor, static shapes) of an inference-only module, compiled with
    inductor's weight freezing (constant weights folded and pre-packed for oneDNN, convs fused
    with their bias, activation and residual add): on R50-550 the network takes 256 ms instead
    of 291 ms in fp32 on 2 threads. Compilation happens on the first call of each input shape
    (batch size); if it fails (e.g. no C++ compiler), a warning is logged and the eager module
    runs from then on.

    Args:
        module (nn.Module): eval mode, no gradients.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.eager = module
        self._compiled = torch.compile(module, dynamic=False)
        self._failed = False

    def forward(self, *args):
        if self._failed or torch.is_grad_enabled():
            return self.eager(*args)
        import torch._inductor.config as inductor_config

        try:
            with inductor_config.patch(freezing=True):
                return self._compiled(*args)
        except Exception as e:  # a missing toolchain, an unsupported op: run eagerly
            self._failed = True
            logger.warning(
                f"torch.compile of {type(self.eager).__name__} failed, running it eagerly "
                f"(MODEL.YOLACT.FAST_CPU_COMPILE): {str(e).strip().splitlines()[0][:200]}"
            )
            return self.eager(*args)


class InferenceCopy:
    """
    A lazily built copy of some modules for the fast CPU path: BatchNorm folded, channels_last
    weights, for a reduced-precision autocast conv parameters stored in that precision, and
    optionally compiled (:class:`CompiledModule`). It is rebuilt whenever any parameter or
    buffer of the originals is replaced or modified in place (loading weights, optimizer steps,
    ``.to(device)``), and held outside the module tree, so it appears in no state dict.

    Args:
        autocast_dtype (torch.dtype or None): the autocast dtype the copy runs under.
        compile (bool): wrap each copy in :class:`CompiledModule`.
    """

    def __init__(self, autocast_dtype: Optional[torch.dtype] = None, compile: bool = False):
        self.autocast_dtype = autocast_dtype
        self.compile = compile
        self._signature = None
        self._modules = None

    def get(self, *modules: nn.Module) -> Tuple[nn.Module, ...]:
        """
        Args:
            modules (nn.Module): the originals, in eval mode.

        Returns:
            tuple[nn.Module]: their inference copies, in the same order.
        """
        signature = _state_signature(modules)
        if signature != self._signature:
            self._modules = tuple(self._build(m) for m in modules)
            self._signature = signature
        return self._modules

    def _build(self, module: nn.Module) -> nn.Module:
        clone = copy.deepcopy(module).eval().requires_grad_(False)
        fold_batch_norms_(clone)
        if self.autocast_dtype is not None:
            cast_conv_parameters_(clone, self.autocast_dtype)
        clone = clone.to(memory_format=torch.channels_last)
        return CompiledModule(clone) if self.compile else clone
