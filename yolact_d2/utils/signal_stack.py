# Copyright (c) yolact_d2 contributors.
"""
The calling thread's alternate signal stack (``sigaltstack``), kept as it was across calls into
libraries that replace it.

Why: OpenVINO's CPU plugin (seen with openvino 2026.4.1) gives the thread that compiles a model
an alternate signal stack of its own and, when that compiled model is destroyed, restores the
stack that was installed before it. With two compiled models destroyed in the order they were
made (A, B, then A deleted, then B), the thread is left with A's stack, already freed. The next
signal whose handler runs on the alternate stack (Python's own handlers and faulthandler's
are installed with ``SA_ONSTACK``) then has its frame written into freed memory: heap
corruption, or a SIGSEGV (``si_code`` SI_KERNEL, at an innocent instruction) when the memory is
unmapped. That was the segmentation fault of the test suite (a pytest process that had made and
dropped many OpenVINO models crashed at a later signal while waiting on a subprocess), and the
benchmark tool did the same.
"""

import contextlib
import ctypes
import ctypes.util
import sys

__all__ = ["preserved_signal_stack", "current_signal_stack"]

_SS_DISABLE = 2


class _Stack(ctypes.Structure):
    _fields_ = [
        ("ss_sp", ctypes.c_void_p),
        ("ss_flags", ctypes.c_int),
        ("ss_size", ctypes.c_size_t),
    ]


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def current_signal_stack():
    """(address, size, disabled) of the calling thread's alternate signal stack; None where it
    cannot be read (not Linux)."""
    if _LIBC is None:
        return None
    stack = _Stack()
    if _LIBC.sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return stack.ss_sp or 0, stack.ss_size, bool(stack.ss_flags & _SS_DISABLE)


@contextlib.contextmanager
def preserved_signal_stack():
    """
    Runs the body, then puts back the calling thread's alternate signal stack as it was before
    it (a no-op where ``sigaltstack`` is not available). Wrap every call that makes an OpenVINO
    compiled model (``Core.compile_model``, NNCF's quantisation): the plugin's own stack is then
    never the thread's, and what it restores when the model is destroyed is the stack that was
    there before, which outlives it.
    """
    if _LIBC is None:
        yield
        return
    saved = _Stack()
    if _LIBC.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        restore = _Stack(saved.ss_sp, _SS_DISABLE if saved.ss_flags & _SS_DISABLE else 0,
                         saved.ss_size)  # fmt: skip
        _LIBC.sigaltstack(ctypes.byref(restore), None)
