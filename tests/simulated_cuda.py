# Copyright (c) yolact_d2 contributors.
"""
Simulated CUDA: tensors that say they are on ``cuda:0`` while their values live on the CPU, so
that code meant for a GPU runs, with real values, on a machine without one, and every place
where a CUDA tensor would meet a CPU tensor fails as it would on a GPU.

Why not ``FakeTensorMode`` alone: fake tensors have no values, so every data-dependent size
(the candidates after the score pre-filter, the NMS survivors, the matched priors of the loss)
becomes an unbacked ``SymInt``, and every Python branch on one raises
``GuardOnDataDependentSymNode`` -- Detectron2's own ``Boxes.__init__`` branches on
``tensor.numel() == 0``, so no ``Instances`` can be built from fake detections. Real-tensor
propagation (``fake_tensor_propagate_real_tensors``) would supply the values, but it computes
them by calling each op with the fake op's arguments, so a fake CUDA tensor would need a real
CUDA tensor behind it. So the tests use fake tensors (``FakeTensorMode``) for what has no data
dependence (the network's forward on all architectures, ``torch.export`` tracing) and this
module for the whole pipelines (inference to ``Instances``, a training step, NMS).

How it works:

* :class:`SimulatedCudaTensor` is a wrapper tensor subclass whose metadata says ``cuda:0``
  (so ``tensor.device``, ``is_cuda``, the autocast dispatch keys and ``.numpy()``'s refusal
  are those of a CUDA tensor) and which holds a real CPU tensor of the same shape.
* :class:`SimulatedCuda` is a context with two modes. Its ``TorchFunctionMode`` catches every
  call that names a CUDA device (``torch.zeros(..., device="cuda")``, ``t.to("cuda")``,
  ``t.cuda()``, ``new_full(..., device=...)``): it runs it on the CPU and wraps the result (the
  real call would first initialise the CUDA driver and fail). Its ``TorchDispatchMode`` sees
  every ATen operator: it checks the devices of the tensor arguments as CUDA kernels do (a
  CUDA operand with a CPU operand of one or more dimensions raises
  :class:`DeviceMismatchError`; CPU zero-dimensional tensors are allowed, as in PyTorch;
  copies between devices and CPU index tensors are allowed), runs the operator on the real
  CPU values and wraps the results when the operator ran "on CUDA". ``t.cpu()`` returns a
  plain CPU tensor, ``.item()``/``.tolist()``/``bool(t)`` return the real values.
* Inside the context ``torch.cuda.is_available()`` is True and the runtime calls that measure
  or wait (``synchronize``, memory statistics) are no-ops, so CUDA autocast and the gradient
  scaler are enabled as on a GPU; any other CUDA runtime call still fails (it would need a
  driver) and shows the test where the library talks to the runtime.
* :func:`to_simulated_cuda` moves a CPU-built module's parameters and buffers to simulated
  CUDA (``Module.to("cuda")`` cannot be used: it would call the driver).

What this cannot show: CUDA kernels' own numerics and speed, asynchronous execution, NCCL, and
custom operators' internals (a custom op is one operator here; its Python implementation is
checked by calling it directly).
"""

import contextlib
from typing import Iterator
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

__all__ = [
    "DeviceMismatchError",
    "SimulatedCuda",
    "SimulatedCudaTensor",
    "to_simulated_cuda",
    "cpu_values",
    "all_on_cuda",
    "to_fake_cuda",
    "build_model_on_simulated_cuda",
]

CUDA = torch.device("cuda", 0)
aten = torch.ops.aten

# Operators whose tensor arguments may be on different devices on a real GPU.
_CROSS_DEVICE_OPS = {
    aten._to_copy.default,
    aten.copy_.default,
    aten._copy_from.default,
    aten._foreach_copy_.default,
    aten.lift_fresh.default,
    aten.lift_fresh_copy.default,
}
# Operators that accept CPU index tensors for a CUDA tensor (PyTorch moves them).
_CPU_INDICES_OPS = {
    aten.index.Tensor,
    aten.index_put.default,
    aten.index_put_.default,
    aten._index_put_impl_.default,
}


class DeviceMismatchError(RuntimeError):
    """A CUDA tensor met a CPU tensor in an operator that a GPU would refuse."""


class SimulatedCudaTensor(torch.Tensor):
    """A tensor on ``cuda:0`` as far as Python code can tell, whose values are the CPU tensor
    ``self.cpu_values`` (the two share their storage)."""

    @staticmethod
    def __new__(cls, values: torch.Tensor):
        # A plain subclass of a CPU tensor: C++ (the autograd engine's stream bookkeeping, the
        # kernels) sees the CPU and never calls the CUDA runtime; Python sees the properties
        # below. Every operator goes through _CudaOps (the Python dispatch key).
        tensor = torch.Tensor._make_subclass(cls, values, values.requires_grad)
        tensor.cpu_values = values
        return tensor

    __torch_function__ = torch._C._disabled_torch_function_impl

    @property
    def device(self) -> torch.device:
        return CUDA

    @property
    def is_cuda(self) -> bool:
        return True

    @property
    def is_cpu(self) -> bool:
        return False

    def get_device(self) -> int:
        return 0

    def numpy(self, *args, **kwargs):
        raise TypeError(
            "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the "
            "tensor to host memory first."
        )

    def cpu(self, memory_format=torch.preserve_format):
        return self.to("cpu", memory_format=memory_format)

    def to(self, *args, **kwargs):
        args = _other_tensor_as_device_and_dtype(args)
        copy = kwargs.pop("copy", False)
        parsed = {k: v for k, v in kwargs.items() if k != "non_blocking"}
        device, dtype, _, memory_format = torch._C._nn._parse_to(*args, **parsed)
        if device is None or device.type != "cpu":
            out = super().to(*args, **kwargs)
            return out.clone() if copy and out is self else out
        # A copy to the host: a plain CPU tensor, as on a GPU.
        host = self.cpu_values.detach() if not self.requires_grad else _host_copy(self)
        return host.to(dtype=dtype or self.dtype, memory_format=memory_format, copy=True)

    def __repr__(self):
        return f"SimulatedCudaTensor({self.cpu_values!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run_on_cpu(func, args, kwargs or {})


def _other_tensor_as_device_and_dtype(args: tuple) -> tuple:
    """``t.to(other, ...)`` as ``t.to(other.device, other.dtype, ...)``: C++ would read the
    device of ``other`` from C++, which is the CPU for a simulated CUDA tensor."""
    if args and isinstance(args[0], torch.Tensor):
        return (args[0].device, args[0].dtype) + tuple(args[1:])
    return args


def _host_copy(tensor: "SimulatedCudaTensor") -> torch.Tensor:
    """A differentiable device-to-host copy (gradients flow back to the CUDA tensor)."""
    return torch.ops.aten._to_copy(tensor, device=torch.device("cpu"))


def cpu_values(x):
    """The CPU values behind a simulated CUDA tensor (anything else unchanged)."""
    return x.cpu_values if isinstance(x, SimulatedCudaTensor) else x


def _is_cuda_device(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return False


def _to_cpu_device(x):
    return torch.device("cpu") if _is_cuda_device(x) else x


def _wrap(x):
    if isinstance(x, torch.Tensor) and not isinstance(x, SimulatedCudaTensor):
        return SimulatedCudaTensor(x)
    return x


def _to_cuda(tensor: torch.Tensor) -> torch.Tensor:
    """A host-to-device copy (never sharing memory with the host tensor)."""
    if isinstance(tensor, SimulatedCudaTensor):
        return tensor
    return SimulatedCudaTensor(tensor.detach().clone())


def _device_label(t: torch.Tensor) -> str:
    return "cuda:0" if isinstance(t, SimulatedCudaTensor) else str(t.device)


class _CudaCalls(TorchFunctionMode):
    """Runs the calls that name a CUDA device on the CPU and wraps what they return."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.tolist and isinstance(args[0], SimulatedCudaTensor):
            return args[0].cpu_values.tolist()  # a device-to-host copy on a GPU too
        if func is torch.Tensor.cuda:
            return _to_cuda(args[0])
        if func in (torch._C._nn._parse_to, torch.device):
            return func(*args, **kwargs)
        if func is torch.Tensor.to:
            args = args[:1] + _other_tensor_as_device_and_dtype(args[1:])
        flat, _ = tree_flatten((args, kwargs))
        if not any(_is_cuda_device(x) for x in flat):
            return func(*args, **kwargs)
        out = func(*tree_map(_to_cpu_device, args), **tree_map(_to_cpu_device, kwargs))
        return tree_map(lambda x: _to_cuda(x) if isinstance(x, torch.Tensor) else x, out)


def _run_on_cpu(func, args, kwargs):
    """
    An operator with a simulated CUDA tensor among its arguments: the devices checked as a CUDA
    kernel checks them, the operator run on the CPU values, its results on simulated CUDA.
    """
    flat, _ = tree_flatten((args, kwargs))
    tensors = [x for x in flat if isinstance(x, torch.Tensor)]
    on_cuda = any(isinstance(t, SimulatedCudaTensor) for t in tensors)
    # In the backward pass the autograd engine creates the zero gradients it needs from the
    # tensors' C++ options, which say CPU here; PyTorch, not this project, decides the devices
    # there, so the backward pass is not checked.
    in_backward = torch._C._current_graph_task_id() != -1
    if on_cuda and func not in _CROSS_DEVICE_OPS and not in_backward:
        checked = tensors
        if func in _CPU_INDICES_OPS:
            # self (and values) must be on CUDA; the indices may be on the CPU.
            indices = args[1] if len(args) > 1 else kwargs.get("indices", [])
            skip = {id(i) for i in indices if isinstance(i, torch.Tensor)}
            checked = [t for t in tensors if id(t) not in skip]
        stray = [t for t in checked if not isinstance(t, SimulatedCudaTensor) and t.dim() > 0]
        if stray:
            raise DeviceMismatchError(
                f"{func}: expected all tensors to be on the same device, but found "
                f"{', '.join(sorted({_device_label(t) for t in tensors}))} (a CPU tensor of "
                f"shape {tuple(stray[0].shape)} met a CUDA tensor)"
            )
    to_cpu = lambda x: _to_cpu_device(cpu_values(x))  # noqa: E731
    out = func(*tree_map(to_cpu, args), **tree_map(to_cpu, kwargs))
    if func is aten._to_copy.default and "device" in kwargs and not in_backward:
        # (The engine converts gradients to the dtype and C++ device of their input, which is
        # the CPU here: in the backward pass every tensor stays on simulated CUDA.)
        on_cuda = _is_cuda_device(kwargs["device"])
    elif func in (aten.copy_.default, aten._foreach_copy_.default):
        return args[0]
    if func in (aten._local_scalar_dense.default,):
        return out
    if not on_cuda:
        return out
    if torch.Tag.inplace_view in func.tags:
        # (unsqueeze_, transpose_...): the values' metadata changed above; the simulated
        # tensor's own (a CPU tensor to C++) is changed by the CPU kernel, the Python dispatch
        # key excluded so that the call does not come back here.
        with torch._C._ExcludeDispatchKeyGuard(
            torch._C.DispatchKeySet(torch._C.DispatchKey.Python)
        ):
            func(*args, **kwargs)
        return args[0]
    if "out" in kwargs:
        return kwargs["out"]
    if func._schema.is_mutable and _returns_self(func):
        return args[0]
    return tree_map(_wrap, out)


def _returns_self(func) -> bool:
    """In-place operators (``add_``...) return their first argument, which must stay the same
    Python object (autograd and the optimizer hold it)."""
    return func._schema.name.endswith("_") and bool(func._schema.returns)


class _SimulatedCudaAutocast(torch.amp.autocast_mode.autocast):
    """``torch.autocast("cuda", dtype)`` as CPU autocast to the same dtype: the simulated
    tensors are CPU tensors to the dispatcher, so CUDA autocast would never cast them. CPU
    autocast's operator lists are close to CUDA's (convolutions and matmuls in the low dtype,
    reductions and losses in float32), so the dtypes that reach the loss are those of AMP."""

    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        if device_type == "cuda":
            device_type, dtype = "cpu", dtype or torch.float16
        super().__init__(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


class SimulatedCuda(contextlib.AbstractContextManager):
    """
    The context in which simulated CUDA tensors work (see the module docstring).

    Example::

        model = to_simulated_cuda(build_model(cfg))
        with SimulatedCuda():
            outputs = model(inputs)
    """

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        stack = self._stack
        stack.enter_context(mock.patch("torch.cuda.is_available", return_value=True))
        stack.enter_context(mock.patch("torch.cuda.device_count", return_value=1))
        stack.enter_context(mock.patch("torch.cuda.current_device", return_value=0))
        for name in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
            stack.enter_context(mock.patch(f"torch.cuda.{name}", lambda *a, **k: None))
        for name in ("max_memory_allocated", "memory_allocated", "max_memory_reserved"):
            stack.enter_context(mock.patch(f"torch.cuda.{name}", lambda *a, **k: 0))
        stack.enter_context(
            mock.patch("torch.cuda.get_device_name", lambda *a, **k: "simulated CUDA (CPU)")
        )
        stack.enter_context(mock.patch("torch.autocast", _SimulatedCudaAutocast))
        stack.enter_context(_CudaCalls())
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)


def to_simulated_cuda(module: torch.nn.Module) -> torch.nn.Module:
    """
    Replaces every parameter and buffer of a CPU ``module`` by a simulated CUDA tensor with the
    same values (in place; returns ``module``). Parameters stay ``nn.Parameter`` with their
    ``requires_grad``, so optimizers built afterwards see CUDA parameters.
    """
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                sub._parameters[name] = torch.nn.Parameter(
                    SimulatedCudaTensor(param.detach()), requires_grad=param.requires_grad
                )
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = SimulatedCudaTensor(buffer)
    return module


def build_model_on_simulated_cuda(cfg) -> torch.nn.Module:
    """Detectron2's ``build_model``, where a config with ``MODEL.DEVICE`` "cuda" is built on the
    CPU and then moved to simulated CUDA (what ``model.to("cuda")`` does on a GPU)."""
    from detectron2.modeling import build_model

    if not cfg.MODEL.DEVICE.startswith("cuda"):
        return build_model(cfg)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    return to_simulated_cuda(build_model(cfg))


def to_fake_cuda(module: torch.nn.Module, mode) -> torch.nn.Module:
    """
    Replaces every parameter and buffer of a CPU ``module`` by a fake CUDA tensor of ``mode``
    (a ``FakeTensorMode``), in place. Building the model under the mode with ``MODEL.DEVICE
    cuda`` does not work (``Module.to`` fails to swap BatchNorm's parameters for fake ones), and
    ``mode.from_tensor`` keeps the CPU device, so each tensor is made anew with
    ``torch.empty_strided(..., device="cuda")`` under the mode (a fake tensor has no values).
    """
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                with mode:
                    fake = torch.empty_strided(
                        param.shape, param.stride(), dtype=param.dtype, device=CUDA
                    )
                sub._parameters[name] = torch.nn.Parameter(fake, param.requires_grad)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                with mode:
                    sub._buffers[name] = torch.empty_strided(
                        buffer.shape, buffer.stride(), dtype=buffer.dtype, device=CUDA
                    )
    return module


def _tensors(obj) -> Iterator[torch.Tensor]:
    from detectron2.structures import Boxes, Instances

    if isinstance(obj, Instances):
        for value in obj.get_fields().values():
            yield from _tensors(value)
    elif isinstance(obj, Boxes):
        yield obj.tensor
    elif isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def all_on_cuda(obj) -> list:
    """The tensors in ``obj`` (Instances, Boxes, dicts, lists) that are not simulated CUDA
    tensors, described as "shape dtype device"; empty when everything is on CUDA."""
    return [
        f"{tuple(t.shape)} {t.dtype} {t.device}"
        for t in _tensors(obj)
        if not isinstance(t, SimulatedCudaTensor)
    ]
