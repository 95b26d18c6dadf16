"""Reading source files and writing outputs and manifest records so that every fault becomes
either a one-line reason for one image or a :class:`~visualmixer.tools.errors.RunStopped` for the
run (never a traceback).

- Reading a source file: missing (vanished mid-run), a broken symbolic link, not a regular file
  (a FIFO, a device), unreadable (permission, I/O error) or changed while it was read →
  ``(None, reason)``: that image fails with the reason, the run goes on, and a rerun tries it again.
- Writing an output or a manifest record: an ``OSError`` that every later write would hit too
  (disk full, quota, permission, read-only file system, I/O error) → :class:`RunStopped`, whose
  message names the file, the space needed and free, that nothing is lost, and how to resume.
  The temporary file of the failed write is removed; the manifest is cut back to its last whole
  line.
- Checking finished outputs on a resume (:class:`OutputCheck`): an output whose stat signature is
  the one recorded when it was written is taken as intact; any other is hashed
  (:func:`output_intact`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from visualmixer.tools import imageio as vio
from visualmixer.tools.errors import RunStopped, describe_oserror, free_bytes, human_bytes, stopping

__all__ = ["read_source", "source_signature", "output_signature", "output_intact", "bytes_as_recorded",
           "OutputCheck", "RACY_MARGIN_NS", "damaged_note", "check_no_way_into", "StopGuard"]

#: How close to the manifest's last write (or later) an output's modification time makes it
#: "racily clean" (:class:`OutputCheck`): 2 s, the coarsest modification-time step of common
#: file systems (FAT/vfat 2 s; ext4 with 128-byte inodes, ext3, HFS+ 1 s). DST and the manifest
#: are often on different file systems (the manifest lives next to the key), so the output's
#: coarse time must be compared with a margin of one step of the coarsest clock, not with the
#: manifest's nanoseconds: a 1-s DST time is up to 1 s before the write it records.
RACY_MARGIN_NS = 2_000_000_000


def source_signature(st: os.stat_result) -> list[int]:
    """``[size, mtime_ns, inode]``: what tells a replaced or edited source file."""
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ino)]


def read_source(path: Path) -> tuple[bytes | None, str, list[int] | None]:
    """Read one source file: ``(data, "", signature)`` or ``(None, reason, None)``. Only regular
    files are read (:func:`~visualmixer.tools.imageio.special_file`): a FIFO or a device fails
    at once instead of hanging the run or reading without end."""
    try:
        with open(path, "rb", opener=vio.nonblocking) as fh:
            before = os.fstat(fh.fileno())
            if vio.special_file(before):
                return None, vio.special_file(before), None
            data = fh.read()
            after = os.fstat(fh.fileno())
        now = os.stat(path)
    except FileNotFoundError:
        if vio.broken_link(path):
            return None, vio.broken_link(path), None
        return None, "source file vanished during the run (rerun when it is back)", None
    except OSError as exc:
        return None, f"cannot read source file ({describe_oserror(exc)}); rerun to retry", None
    sig = source_signature(after)
    if (source_signature(before) != sig or len(data) != after.st_size
            or source_signature(now) != sig):
        return None, "source file changed while it was read (rerun to retry)", None
    return data, "", sig


def output_signature(path: str | os.PathLike) -> list[int] | None:
    """:func:`source_signature` of the regular file ``path`` (``None``: missing, unreadable, or
    not a regular file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return source_signature(st) if stat.S_ISREG(st.st_mode) else None


def output_intact(path: Path, rec: dict) -> bool:
    """Whether ``path`` holds the output that the ``done`` record ``rec`` describes: a regular file
    of the recorded size (``bytes``) and SHA-256 (``sha256``), read whole. A record without them
    (an earlier version's) asks only that the file exist."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    if rec.get("bytes") is not None and st.st_size != int(rec["bytes"]):
        return False
    if rec.get("sha256") is None:
        return True
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:  # (hashlib.file_digest is Python 3.11+; we support 3.10)
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return False
    return digest.hexdigest() == rec["sha256"]


def bytes_as_recorded(data: bytes, rec: dict) -> bool:
    """Whether ``data`` are the bytes the ``done`` record ``rec`` describes (its ``bytes`` and
    ``sha256``; what a record of an earlier version lacks is not checked, as in
    :func:`output_intact`)."""
    if rec.get("bytes") is not None and len(data) != int(rec["bytes"]):
        return False
    return rec.get("sha256") is None or hashlib.sha256(data).hexdigest() == rec["sha256"]


class OutputCheck:
    """Whether the finished outputs of a resumed run are as their ``done`` records say.

    As git and rsync do, an output whose stat signature (size, modification time, inode:
    :func:`source_signature`) is the one recorded after it was written
    (:meth:`~visualmixer.tools.manifest.Manifest.output_sig`) is taken as intact without reading
    it. Any other output is hashed (:func:`output_intact`): another signature (truncated, edited,
    replaced, copied back), a record without one (written by an earlier version, or revoked by a
    settling that found the file damaged), a signature whose size is not the record's ``bytes``,
    and a "racily clean" output, whose modification time is later than
    :data:`RACY_MARGIN_NS` before the manifest's last write (it could have been edited within the
    same tick of a coarse file-system clock, its time unchanged: git's rule, with a margin because
    DST and the manifest may tick differently). With ``full=True`` every output is hashed. An
    edit that keeps the size, the inode and the modification time (``os.utime``) passes the
    default check.

    Each output is checked once (a mixed resume asks twice). Outputs hashed intact are kept in
    :attr:`fresh` (output name → signature) for a ``sigs`` record
    (:func:`~visualmixer.tools.manifest.sigs_records`), written later than them, so that the next
    rerun need not read them: those whose signature is not the recorded one, and racy ones whose
    time a new manifest write leaves behind (more than twice :data:`RACY_MARGIN_NS` in the past).
    A racy output whose signature is already the recorded one and whose time is more recent, or in
    the future (clock skew, ``cp -p`` from a machine ahead), is hashed but not signed again: that
    could not make it trusted, and would grow the manifest on every rerun.
    """

    def __init__(self, man, *, full: bool = False):
        self.man = man
        self.full = bool(full)
        self.fresh: dict[str, list[int]] = {}
        self._seen: dict[str, bool] = {}

    def intact(self, path: Path, rec: dict) -> bool:
        """Whether ``path`` holds the output that the ``done`` record ``rec`` describes."""
        key = rec.get("out") or str(path)
        if key not in self._seen:
            self._seen[key] = self._check(path, rec)
        return self._seen[key]

    def _check(self, path: Path, rec: dict) -> bool:
        sig = output_signature(path)
        if sig is None:
            return False
        recorded = self.man.output_sig(rec)
        racy = self.man.mtime_ns is None or sig[1] >= self.man.mtime_ns - RACY_MARGIN_NS
        sized = rec.get("bytes") is None or sig[0] == int(rec["bytes"])
        if sig == recorded and sized and not racy and not self.full:
            return True
        if not output_intact(path, rec):
            return False
        # signing again helps a racy output only if the manifest write that records it is more
        # than the margin later than its time, also on a manifest file system of 2-s steps
        helps = sig != recorded or (racy and sig[1] < time.time_ns() - 2 * RACY_MARGIN_NS)
        if helps and rec.get("out") and output_signature(path) == sig:
            self.fresh[rec["out"]] = sig
        return True


def damaged_note(count: int, then: str) -> str:
    """The warning for ``count`` outputs that :func:`output_intact` found not as recorded."""
    return (f"{count} output(s) differ from what the manifest records (size or SHA-256: damaged or edited "
            f"since they were written): {then}")


def _way_into(path: Path, forbidden: dict[str, Path]) -> str:
    """Why writing into the folder ``path`` would write inside a ``forbidden`` folder, or ``""``."""
    real = Path(os.path.realpath(path))
    for label, folder in forbidden.items():
        if real == folder or folder in real.parents:
            return (f"{path} leads into {label} {folder} (it resolves to {real}: a symbolic link on "
                    f"the way); nothing is ever written inside {label}: remove the link, or choose "
                    "a folder without it")
    return ""


def check_no_way_into(root: Path, names, forbidden: dict[str, Path]) -> None:
    """Refuse (``ValueError``) when the folder of an output ``root / name`` resolves inside one of
    the ``forbidden`` folders (label → resolved path): a symbolic link in the destination that
    points into SRC must not let a run write over the originals."""
    for folder in sorted({os.path.dirname(n) for n in names}):
        why = _way_into(root / folder, forbidden)
        if why:
            raise ValueError(why)


_ADVICE = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space (quota)",
    errno.EACCES: "make it writable",
    errno.EPERM: "make it writable",
    errno.EROFS: "remount it read-write or choose another destination",
    errno.EIO: "check the disk",
}


class StopGuard:
    """Turns stopping ``OSError`` s of the writes of one run into :class:`RunStopped`.

    Parameters
    ----------
    manifest : path-like
        The run's manifest (named in the message: the finished images are recorded there).
    total : int
        Images this run set out to write (for "N to go").
    never_inside : dict, optional
        Folders (label → resolved path) no output may be written inside, however its path
        resolves (checked at every write: :func:`check_no_way_into` checks before the run).
    """

    def __init__(self, manifest: str | os.PathLike, total: int, *,
                 never_inside: dict[str, Path] | None = None):
        self.manifest = Path(manifest)
        self.total = int(total)
        self.never_inside = dict(never_inside or {})
        self.written = 0
        self.bytes_written = 0

    @contextlib.contextmanager
    def writing(self, path: str | os.PathLike, needed: int, *, verb: str = "write") -> Iterator[None]:
        """Guard one write of ``needed`` bytes to ``path``."""
        try:
            yield
        except OSError as exc:
            if not stopping(exc):
                raise
            raise self.stopped(exc, path, needed, verb=verb) from None

    def stopped(self, exc: OSError, path: str | os.PathLike, needed: int, *,
                verb: str = "write") -> RunStopped:
        free = free_bytes(path)
        left = max(self.total - self.written, 0)
        parts = [f"{human_bytes(needed)} needed"] if needed else []
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and self.written and left:
            avg = self.bytes_written / self.written
            parts.append(f"about {human_bytes(avg * left)} for the {left} image(s) left")
        if free is not None:
            parts.append(f"{human_bytes(free)} free")
        advice = _ADVICE.get(exc.errno, "fix the cause")
        msg = (f"{describe_oserror(exc)}: cannot {verb} {path} ({', '.join(parts)}); nothing is "
               f"lost: the {self.written} image(s) finished by this run (and those of earlier runs) "
               f"are recorded in {self.manifest}, {left} to go; {advice}, then rerun the same call "
               "to resume")
        return RunStopped(msg, path=str(path), errno=exc.errno, needed=needed, free=free)

    def write_output(self, path: Path, data: bytes) -> list[int] | None:
        """Write one output atomically (its temporary file is removed if this fails); return the
        stat signature of the file now under ``path`` (:func:`output_signature`: the final file,
        renamed into place, which keeps the size, time and inode the temporary file had)."""
        why = _way_into(path.parent, self.never_inside) if self.never_inside else ""
        if why:
            raise ValueError(why)
        with self.writing(path, len(data)):
            vio.write_bytes_atomic(path, data, overwrite=True)
        self.written += 1
        self.bytes_written += len(data)
        return output_signature(path)

    def append(self, manifest, records: list[dict]) -> None:
        """Append manifest records (rolled back to the last whole line if this fails)."""
        if not records:
            return
        with self.writing(manifest.path, 200 * len(records)):
            manifest.append(records)

    def mkdir(self, path: Path) -> None:
        with self.writing(path, 0, verb="create folder"):
            path.mkdir(parents=True, exist_ok=True)
