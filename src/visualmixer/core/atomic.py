"""Atomic file replacement, shared by key files (kernel layer) and image/manifest outputs."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["replace_atomically"]


def replace_atomically(path: Path, data: bytes, *, mode: int, suffix: str, exact_mode: bool = False,
                       overwrite: bool = True) -> Path:
    """Write ``data`` to a new temporary file beside ``path`` (created with ``mode``, subject to the
    umask unless ``exact_mode``), fsync it, then ``os.replace`` it onto ``path``. A crash leaves
    either the old file or the new one, never half a file; the temporary is removed on error.

    With ``overwrite=False`` the temporary is linked to ``path`` instead, which fails with
    ``FileExistsError`` when ``path`` exists by then (a file made since the caller looked is never
    replaced)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exact_mode:
            os.chmod(tmp, mode)
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _link_new(tmp: Path, path: Path) -> None:
    """Give the finished ``tmp`` the name ``path`` only if no file has it (``os.link`` fails on an
    existing name, atomically); on a file system without hard links, check and rename."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network and FUSE file systems)
        if os.path.lexists(path):
            raise FileExistsError(17, "File exists", str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)
