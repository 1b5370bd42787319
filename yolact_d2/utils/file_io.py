# Copyright (c) yolact_d2 contributors.
"""Crash-safe file writing."""

import contextlib
import os
import secrets

__all__ = ["atomic_open"]


def _fsync_directory(directory: str) -> None:
    """Makes a rename durable where the OS supports syncing a directory."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb"):
    """
    Opens a temporary file next to ``path`` for writing. When the block succeeds the file is
    flushed, fsynced and renamed onto ``path`` (an atomic replace); on any error it is removed
    and ``path`` is left as it was. A reader sees the old file or the complete new one, never a
    partial file. Missing parent directories are created.

    Args:
        path (str): the final file.
        mode (str): "wb" or "w".

    Yields:
        the open temporary file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # os.open (unlike tempfile) honours the umask, so the result gets the usual permissions.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)
