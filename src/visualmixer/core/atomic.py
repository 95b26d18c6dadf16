"""Atomic file replacement, shared by key files (kernel layer) and image/manifest outputs."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["replace_atomically"]


def replace_atomically(path: Path, data: bytes, *, mode: int, suffix: str, exact_mode: bool = False) -> Path:
    """Write ``data`` to a new temporary file beside ``path`` (created with ``mode``, subject to the
    umask unless ``exact_mode``), fsync it, then ``os.replace`` it onto ``path``. A crash leaves
    either the old file or the new one, never half a file; the temporary is removed on error."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exact_mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
