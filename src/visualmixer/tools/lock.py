"""One run at a time per manifest (and so per destination): an exclusive ``fcntl.flock`` lock.

``obfuscate_folder`` and ``restore_folder`` hold :class:`RunLock` on ``MANIFEST.lock`` (beside the
manifest) for the whole run, in the driver process (worker processes and Dask workers never
touch it). A second run refuses at once with :class:`~visualmixer.tools.errors.DestinationBusy`,
naming the holder's PID and start time, which the holder writes into the lock file.

The destination folder itself is locked as well (:meth:`RunLock.for_destination`, a lock file in
the user's temporary folder named after the destination's path), so two runs into one destination
with two different manifests are excluded too.

The kernel releases a ``flock`` when its holder dies (``kill -9`` included), so a lock file left
by a dead run is stale by construction: the next run takes it and says so in a warning. The lock
file itself is left in place (removing it would let two runs lock two different files). Where the
manifest's folder is not writable, the lock lives in the user's temporary folder instead, named
after the manifest's path. ``flock`` is advisory and local: runs on two machines sharing one
network folder are not excluded.

A lock file is opened without following a symbolic link and must be a regular file, and the
temporary folder of the locks (``visualmixer-locks-<uid>``) must be a folder of this user that no
one else can enter: a link planted there by another user (say, one pointing at a key file) would
otherwise have the lock record written over its target.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import socket
import stat
import tempfile
import time
from pathlib import Path

from visualmixer.tools.errors import DestinationBusy

__all__ = ["RunLock", "lock_path_for", "read_lock_info", "destination_lock_path"]


def lock_path_for(manifest: str | os.PathLike) -> Path:
    """``MANIFEST.lock``, beside the manifest."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.name + ".lock")


def _private_lock_file(path: str | os.PathLike, prefix: str = "") -> Path:
    tag = hashlib.sha256(str(Path(os.path.abspath(path))).encode("utf-8", "surrogateescape"))
    folder = Path(tempfile.gettempdir()) / f"visualmixer-locks-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a folder"
        raise PermissionError(
            f"the lock folder {folder} is not private to this user ({kind}, owner uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):o}); another user may have made it: remove it and run again, or set "
            "TMPDIR to a folder of your own (on a file system without owners and modes, such as vfat, "
            "it can never be private)"
        )
    return folder / f"{prefix}{tag.hexdigest()[:16]}.lock"


def _open_lock_file(path: Path) -> int:
    """Open (create: mode 0600) the lock file ``path``, never through a symbolic link; refuse a
    link or anything but a regular file (its record would be written over the target)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise PermissionError(f"the lock file {path} is a symbolic link: remove it and run again") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PermissionError(f"the lock file {path} is not a regular file: remove it and run again")
    return fd


def _fallback_path(manifest: Path) -> Path:
    return _private_lock_file(manifest)


def destination_lock_path(dst: str | os.PathLike) -> Path:
    """The lock file of a destination folder (in the user's temporary folder)."""
    return _private_lock_file(dst, prefix="dst-")


def read_lock_info(path: str | os.PathLike) -> dict:
    """The holder's record (``pid``, ``started``, ``command``, ``host``), or ``{}``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive lock of one manifest for the duration of a run (a context manager).

    Parameters
    ----------
    manifest : path-like
        The run's manifest; the lock file is ``MANIFEST.lock``.
    command : str
        What holds it (``"obfuscate"``, ``"restore"``), written into the lock file.
    target : str
        The destination folder, for messages.
    wait_dead : float
        Seconds to wait when the lock is held although its recorded holder is dead (its worker
        processes may still be exiting).

    Attributes
    ----------
    stale : dict
        The record of an earlier holder that ended without releasing cleanly (``{}`` if none).
    """

    def __init__(self, manifest: str | os.PathLike, *, command: str, target: str = "",
                 wait_dead: float = 5.0):
        self.manifest = Path(manifest)
        self.command = command
        self.target = target
        self.wait_dead = float(wait_dead)
        self.path = lock_path_for(self.manifest)
        self.subject = f"the lock of {self.manifest}" + (f" into {target}" if target else "")
        self.stale: dict = {}
        self._fd: int | None = None

    @classmethod
    def for_destination(cls, dst: str | os.PathLike, *, command: str,
                        wait_dead: float = 5.0) -> RunLock:
        """The lock of a destination folder itself (whatever manifest the run uses)."""
        lock = cls(dst, command=command, target=str(dst), wait_dead=wait_dead)
        lock.path = destination_lock_path(dst)
        lock.subject = f"the destination {dst}"
        return lock

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return _open_lock_file(self.path)
        except OSError as exc:  # (a refused link has no errno: raised, not moved elsewhere)
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
        self.path = _fallback_path(self.manifest)
        return _open_lock_file(self.path)

    def acquire(self) -> RunLock:
        fd = self._open()
        deadline = time.monotonic() + self.wait_dead
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                info = read_lock_info(self.path)
                if info.get("released"):  # the new holder has not written its record yet
                    info = {}
                pid = info.get("pid")
                if isinstance(pid, int) and not _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)  # its orphaned workers are exiting
                    continue
                os.close(fd)
                raise self._busy(info) from None
        previous = read_lock_info(self.path)
        if previous.get("pid") and not previous.get("released"):
            self.stale = previous
        record = {
            "pid": os.getpid(),
            "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": self.command,
            "target": self.target,
            "host": socket.gethostname(),
        }
        self._rewrite(fd, record)
        self._record = record
        self._fd = fd
        return self

    @staticmethod
    def _rewrite(fd: int, record: dict) -> None:
        with contextlib.suppress(OSError):  # the record is for messages; the flock is the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record, sort_keys=True) + "\n").encode(), 0)

    def _busy(self, info: dict) -> DestinationBusy:
        pid, started = info.get("pid"), info.get("started")
        what = info.get("command") or "run"
        if pid is None:
            who = "another run (starting up)"
        elif _alive(int(pid)):
            who = f"another {what} run (PID {pid}, started {started})"
        else:
            who = (f"the worker processes of a {what} run whose driver (PID {pid}, started "
                   f"{started}) has ended; wait until they exit")
        return DestinationBusy(
            f"{who} holds {self.subject} ({self.path}); only one run per "
            "destination at a time: wait for it to finish or stop it, then run again",
            pid=pid, started=started, lock_path=str(self.path),
        )

    def release(self) -> None:
        if self._fd is None:
            return
        self._rewrite(self._fd, {**self._record, "released": True})
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
