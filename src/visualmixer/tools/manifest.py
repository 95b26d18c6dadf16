"""The private manifest of a folder run: an append-only JSON-lines file, safe to kill at any moment.

Line 1 is a header (``{"t": "header", ...}``: tool version, source and destination folders, the
options that decide the output bytes, the key's public fingerprint). Every later line is one record
about one image id (its path relative to the source folder):

- ``{"t": "pending", "id": ..., "out": ...}`` — written (and fsynced) *before* the output file is
  written, so an output present after a crash is known to be this run's own;
- ``{"t": "done", "id": ..., "out": ..., "vfe": ..., "plan": {...}, "sha256": ..., ...}`` — the
  output is complete (``plan`` is :meth:`visualmixer.Plans.to_dict`, the few bytes that, with the
  key, restore the image exactly);
- ``{"t": "skipped" | "failed", "id": ..., "reason": ...}``;
- ``{"t": "sigs", "id": SIGS_ID, "sigs": {OUT: [size, mtime_ns, inode], ...}}`` — the stat
  signatures of outputs taken after their ``done`` records (a release settled after the run,
  :mod:`visualmixer.tools.settle`, or outputs a resume hashed and found intact); each names the
  output's signature until a later ``pending`` or ``done`` record of that output
  (:meth:`Manifest.output_sig`). ``null`` instead of a signature says that none holds (settling
  found the file not as its ``done`` record says): the next rerun hashes it. Releases that do
  not know them keep them as a record of an id no image has, and pass it by.

A ``done`` record also carries ``out_sig``, the stat signature of the output it describes (the
final file, after its rename into place), so a resume can take an unchanged output as intact
without reading it (:class:`visualmixer.tools.safe_io.OutputCheck`).

The latest record of an id wins. Records are appended in whole lines with one ``write`` on an
``O_APPEND`` descriptor followed by ``fsync``; a line cut short by a kill is dropped (and the file
truncated back to its last complete line) when the manifest is opened again. A damaged line
elsewhere (power lost mid-append can leave zeros or a cut line that a later run appended after) is
skipped and listed in :attr:`Manifest.damaged`: the image it described is simply done again (its
bytes are the same); a damaged ``sigs`` line (:attr:`Manifest.damaged_sigs`) redoes nothing: the
outputs it named are hashed instead. A failed append (disk full) is rolled back to the last
complete line.

The manifest is private: with the key, its plans restore the originals, and with ``rename=True`` it
holds the original file names. It is created with mode 0600 and never inside the shared folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from visualmixer.core.atomic import replace_atomically
from visualmixer.core.keys import is_key_file

__all__ = ["Manifest", "MANIFEST_VERSION", "READABLE_VERSIONS", "SIGS_ID", "sigs_records"]

#: The format version this code writes.
MANIFEST_VERSION = 1
#: The format versions this code reads (restore; a resume also needs the same generator).
#: Version 2 is written by mixed runs only (:mod:`visualmixer.tools.mixrun`): their ``done``
#: records carry a ``mix`` group record, which a reader of version 1 could not use; version 3 by
#: balanced mixed runs, whose groups are dealt by the switched design (format version 4 records).
READABLE_VERSIONS = frozenset({1, 2, 3})
#: The id of ``sigs`` records: no image has it (an id is a path, and no path holds a NUL).
SIGS_ID = "\x00sigs"
_SIGS_PER_RECORD = 1024
#: How every ``sigs`` line starts (keys sorted: ``id`` first): what tells a damaged one.
_SIGS_START = json.dumps({"id": SIGS_ID})[:-1].encode()


def _only_sigs(line: bytes) -> bool:
    """Whether a damaged manifest line held output signatures only: it starts like a ``sigs``
    line and shows no trace of another record (zeros can run on into the next line; any other
    record has an ``"id"`` key, and a ``"t"`` other than ``"sigs"``)."""
    return (line.lstrip().startswith(_SIGS_START) and line.count(b'"id": ') == 1
            and line.count(b'"t": "') == line.count(b'"t": "sigs"'))


class Manifest:
    """An open manifest file (see the module docstring).

    Use :meth:`create` for a new run and :meth:`open` to resume one (the constructor takes the
    records in file order and applies them as reading does).

    Attributes
    ----------
    path : pathlib.Path
    header : dict
    records : dict
        Latest record per image id.
    damaged : list of int
        Numbers of the lines that could not be read and were skipped (1-based).
    damaged_sigs : list of int
        Those of :attr:`damaged` that still show the start of a ``sigs`` line (cut short or
        garbled later on): they held output signatures only, no image's record.
    written : set of str
        Every output name a ``pending`` or ``done`` record of the file names, also records
        superseded since (an output stays in the destination when its image later failed).
    out_sigs : dict
        Output name → stat signature (or ``None``: none holds) of the ``sigs`` records not
        superseded since.
    mtime_ns : int or None
        The file's modification time when it was read, before this run wrote to it (``None``
        for a new manifest): outputs not older than that less a margin are hashed on a resume
        (:class:`~visualmixer.tools.safe_io.OutputCheck`).
    """

    def __init__(self, path: Path, header: dict[str, Any], records: Iterable[dict[str, Any]] = (),
                 damaged: list[int] | None = None, *, mtime_ns: int | None = None,
                 damaged_sigs: list[int] | None = None):
        self.path = Path(path)
        self.header = header
        self.records: dict[str, dict[str, Any]] = {}
        self.damaged = list(damaged or [])
        self.damaged_sigs = list(damaged_sigs or [])
        self.written: set[str] = set()
        self.out_sigs: dict[str, list[int] | None] = {}
        self.mtime_ns = mtime_ns
        self._fd: int | None = None
        for rec in records:  # in file order
            self._take(rec)

    def _take(self, rec: dict[str, Any]) -> None:
        """Apply one record read or appended: the latest record of an id wins; a ``sigs`` record
        names output signatures until a later record of that output."""
        if rec["t"] == "sigs":
            sigs = rec.get("sigs")
            if isinstance(sigs, dict):
                self.out_sigs.update(sigs)
            return
        self.records[rec["id"]] = rec
        for out in _outputs_of(rec):
            self.written.add(out)
            self.out_sigs.pop(out, None)

    def output_sig(self, rec: dict[str, Any]) -> list[int] | None:
        """The latest recorded stat signature of the output of the ``done`` record ``rec``
        (``None``: none recorded, as by releases before signatures, or one revoked)."""
        return self.out_sigs.get(rec.get("out"), rec.get("out_sig"))

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, header: dict[str, Any], *, overwrite: bool = False) -> Manifest:
        """Start a new manifest at ``path`` holding only ``header`` (mode 0600)."""
        path = Path(path)
        if is_key_file(path):  # overwrite=True or not: replacing it would lose every image it protects
            raise FileExistsError(f"manifest {path} is a visualmixer key file: give the manifest another path")
        if path.exists() and not overwrite:
            raise FileExistsError(f"manifest {path} exists (pass overwrite=True to start over)")
        path.parent.mkdir(parents=True, exist_ok=True)
        head = {"t": "header", "version": MANIFEST_VERSION, **header}
        # a new temporary of its own (O_EXCL, random name: never a file or link already there), 0600
        replace_atomically(path, (json.dumps(head, sort_keys=True) + "\n").encode("utf-8"), mode=0o600,
                           suffix=".new", exact_mode=True)
        return cls(path, head)

    @classmethod
    def read(cls, path: str | os.PathLike) -> Manifest:
        """Read a manifest (header and latest records) without opening it for appending.

        Raises ``ValueError`` (one line) when the file is not a manifest, its header is damaged
        or its format version is not one of :data:`READABLE_VERSIONS`; damaged record lines are
        skipped (:attr:`damaged`).
        """
        path = Path(path)
        try:
            mtime_ns = path.stat().st_mtime_ns
            raw = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"manifest: there is no manifest at {path} (obfuscate writes it beside the key file "
                "that made the run, or where manifest=PATH said, and prints its path)"
            ) from None
        lines = raw.split(b"\n")
        if not raw.endswith(b"\n"):
            lines = lines[:-1]  # the last line was cut short by a kill: not a record
        if not lines or not lines[0].strip():
            raise ValueError(f"{path} is empty or not a visualmixer manifest (to redo the run, "
                             "start over with overwrite=True)")
        header = cls._parse_header(path, lines[0])
        records: list[dict[str, Any]] = []
        damaged: list[int] = []
        damaged_sigs: list[int] = []
        for number, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                rec = None
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str) or "t" not in rec:
                damaged.append(number)
                if _only_sigs(line):
                    damaged_sigs.append(number)
                continue
            records.append(rec)
        return cls(path, header, records, damaged, mtime_ns=mtime_ns, damaged_sigs=damaged_sigs)

    @staticmethod
    def _parse_header(path: Path, line: bytes) -> dict[str, Any]:
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if not isinstance(rec, dict) or rec.get("t") != "header":
            if is_key_file(path):
                raise ValueError(f"{path} is a visualmixer key file, not a manifest: give the manifest another path")
            raise ValueError(
                f"{path}: line 1 is not a visualmixer manifest header (damaged or not a "
                "manifest); it cannot be resumed: start over with overwrite=True"
            )
        if rec.get("version") not in READABLE_VERSIONS:
            readable = ", ".join(str(v) for v in sorted(READABLE_VERSIONS))
            raise ValueError(
                f"{path}: manifest format version {rec.get('version')!r} (written by "
                f"{rec.get('tool', 'another visualmixer')}), this visualmixer reads version "
                f"{readable}: restore with the release that wrote it (or redo the obfuscation: start "
                "over with overwrite=True)"
            )
        return rec

    @classmethod
    def open(cls, path: str | os.PathLike) -> Manifest:
        """Open an existing manifest to append to it, dropping a trailing partial line."""
        path = Path(path)
        man = cls.read(path)
        raw_size = path.stat().st_size
        with open(path, "rb") as fh:
            data = fh.read()
        keep = data.rfind(b"\n") + 1
        if keep != raw_size:
            with open(path, "r+b") as fh:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
        return man

    # -- appending -------------------------------------------------------------------------------
    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records as whole lines, then fsync; update :attr:`records`.

        On an ``OSError`` (disk full, I/O error) the file is cut back to its last complete line
        before the error is raised, so a later run reads every earlier record.
        """
        recs = list(records)
        if not recs:
            return
        payload = "".join(json.dumps(r, sort_keys=True) + "\n" for r in recs).encode("utf-8")
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        size = os.fstat(self._fd).st_size
        view = memoryview(payload)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, size)
            except OSError:
                pass  # the next open drops a trailing partial line anyway
            raise
        for rec in recs:
            self._take(rec)

    def close(self) -> None:
        """Close the append descriptor (records stay readable)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def done(self) -> list[dict[str, Any]]:
        """The ``done`` records, in id order."""
        return [r for _, r in sorted(self.records.items()) if r.get("t") == "done"]


def sigs_records(sigs: dict[str, list[int] | None]) -> list[dict[str, Any]]:
    """``sigs`` records of output name → stat signature; ``None`` is written as ``null``: no
    signature holds for that output (an earlier one is revoked), so a rerun hashes it."""
    items = sorted(sigs.items())
    return [{"t": "sigs", "id": SIGS_ID, "sigs": dict(items[i:i + _SIGS_PER_RECORD])}
            for i in range(0, len(items), _SIGS_PER_RECORD)]


def _outputs_of(rec: dict[str, Any]) -> tuple[str, ...]:
    """The output a record says was (or is being) written: one name for ``pending`` and ``done``."""
    return (rec["out"],) if rec["t"] in ("pending", "done") and isinstance(rec.get("out"), str) else ()
