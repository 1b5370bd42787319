# Copyright (c) yolact_d2 contributors.
"""
Three messages that every command would print and no user can act on, silenced exactly where
they come from; every other warning is left alone.

* ``torch.jit.script is deprecated`` (FutureWarning, twice): fvcore (``fvcore/nn/focal_loss.py``)
  and Detectron2 (``detectron2/modeling/box_regression.py``) script functions when they are
  imported. Their modules are imported here once, with that one message ignored in a
  ``catch_warnings`` block; nothing in yolact_d2 uses ``torch.jit.script``.
* ``pkg_resources is deprecated as an API`` (UserWarning): ``detectron2.model_zoo`` imports
  ``pkg_resources`` (the benchmark uses the model zoo for Mask R-CNN configs). Imported here the
  same way.
* ``No CUDA runtime is found, using CUDA_HOME=...``: logged by ``torch.utils.cpp_extension`` when
  it is imported (by Detectron2's ``collect_env`` in ``train_net.py``, by the CPU compiler) on a
  machine that has a CUDA toolkit but no GPU. It concerns building CUDA extensions, which
  yolact_d2 never does; a filter on that logger drops this one message.

The package imports this module first (``yolact_d2/__init__.py``), so an entry point that
imports ``yolact_d2`` before Detectron2 prints none of them.
"""

import logging
import warnings

_JIT_SCRIPT = r"`torch\.jit\.script` is deprecated"
_PKG_RESOURCES = r"pkg_resources is deprecated as an API"
_NO_CUDA_RUNTIME = "No CUDA runtime is found"


class _DropNoCudaRuntime(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NO_CUDA_RUNTIME)


def import_third_party_quietly() -> None:
    """Imports the modules that warn on import with exactly those warnings ignored (once)."""
    cpp_extension_logger = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _DropNoCudaRuntime) for f in cpp_extension_logger.filters):
        cpp_extension_logger.addFilter(_DropNoCudaRuntime())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_JIT_SCRIPT, category=FutureWarning)
        warnings.filterwarnings("ignore", message=_PKG_RESOURCES, category=UserWarning)
        import fvcore.nn  # noqa: F401

        import detectron2.model_zoo  # noqa: F401
        import detectron2.modeling.box_regression  # noqa: F401
