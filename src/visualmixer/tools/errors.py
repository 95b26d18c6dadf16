"""The errors that stop a folder run, each with a one-line message that names parameters, never
command-line flags (the CLI maps parameter names to its flags, see ``visualmixer.cli._common``).

========================  ==========  ======================================================
exception                 CLI exit    when
========================  ==========  ======================================================
:class:`RunStopped`       3           the destination or the manifest cannot be written (disk
                                      full, permission denied, read-only file system, I/O
                                      error): nothing finished is lost, rerun to resume
:class:`DestinationBusy`  4           another run holds the lock of this manifest/destination
========================  ==========  ======================================================

Usage errors stay ``ValueError`` / ``FileNotFoundError`` / ``FileExistsError`` (CLI exit 2).
"""

from __future__ import annotations

import errno as _errno
import os
import shutil
import signal

__all__ = ["ToolError", "RunStopped", "DestinationBusy", "describe_oserror", "first_few", "human_bytes", "signal_text"]

#: errno values that stop a run (the same error would hit every later write).
STOPPING_ERRNOS = frozenset(
    {_errno.ENOSPC, _errno.EDQUOT, _errno.EACCES, _errno.EPERM, _errno.EROFS, _errno.EIO,
     _errno.EFBIG, _errno.ENOENT, _errno.ENOTDIR}
)

_WHAT = {
    _errno.ENOSPC: "no space left on device",
    _errno.EDQUOT: "disk quota exceeded",
    _errno.EACCES: "permission denied",
    _errno.EPERM: "operation not permitted",
    _errno.EROFS: "read-only file system",
    _errno.EIO: "input/output error",
    _errno.EFBIG: "file too large",
    _errno.ENOENT: "folder vanished",
    _errno.ENOTDIR: "not a folder",
}


class ToolError(Exception):
    """A condition that stops a whole folder run; ``str(exc)`` is one line for the user.

    Attributes
    ----------
    exit_code : int
        The CLI's exit status for it.
    """

    exit_code = 3


class RunStopped(ToolError):
    """Writing the destination or the manifest failed in a way every later write would too.

    Attributes
    ----------
    path : str
        The file that could not be written.
    errno : int or None
    needed : int or None
        Bytes the failed write needed.
    free : int or None
        Bytes free on that file system when it failed (``None`` if unknown).
    resumable : bool
        True: finished images are recorded; rerunning the same call resumes.
    """

    exit_code = 3

    def __init__(self, message: str, *, path: str = "", errno: int | None = None,
                 needed: int | None = None, free: int | None = None, resumable: bool = True):
        super().__init__(message)
        self.path = path
        self.errno = errno
        self.needed = needed
        self.free = free
        self.resumable = resumable


class DestinationBusy(ToolError):
    """Another run holds the lock (attributes ``pid``, ``started``, ``lock_path``)."""

    exit_code = 4

    def __init__(self, message: str, *, pid: int | None = None, started: str | None = None,
                 lock_path: str = ""):
        super().__init__(message)
        self.pid = pid
        self.started = started
        self.lock_path = lock_path


def human_bytes(n: float | None) -> str:
    """``1536`` -> ``"1.5 kB"`` (decimal units)."""
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"  # pragma: no cover


def signal_text(number: int) -> str:
    """``9`` -> ``"signal 9 (SIGKILL)"`` (``"?"`` for a number this platform does not name)."""
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number} (?)"


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    p = os.path.abspath(os.fspath(path))
    while p and not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def describe_oserror(exc: OSError) -> str:
    """A short lower-case reason for ``exc`` ("no space left on device", ...)."""
    return _WHAT.get(exc.errno, (exc.strerror or type(exc).__name__).lower())


def stopping(exc: BaseException) -> bool:
    """Whether ``exc`` is an ``OSError`` that stops the run (rather than failing one image)."""
    return isinstance(exc, OSError) and exc.errno in STOPPING_ERRNOS


def first_few(names, n: int = 3) -> str:
    """The first ``n`` of ``names``, comma-separated, with ``, ...`` when there are more (messages
    name a few examples, not a thousand files)."""
    names = list(names)
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def foreign_outputs(dst, foreign: list[str]) -> FileExistsError:
    """The refusal of a run into ``dst`` that holds ``foreign`` images (relative names) that its
    manifest does not record as written: another key's outputs, another run's, or the user's."""
    shown = first_few(foreign)
    return FileExistsError(
        f"DST {dst} already holds {len(foreign)} image file(s) that this run's manifest does not "
        f"record ({shown}): another run wrote them — with another key or another manifest — or "
        "they were put there by hand, and this run's outputs would mix with them; resume that run "
        "with its own key (and manifest=PATH), choose another DST, or pass overwrite=True to write "
        "into it anyway (files of the same name are replaced)"
    )
