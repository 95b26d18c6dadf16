"""The private manifest of a folder run: an append-only JSON-lines file, safe to kill at any moment.

Line 1 is a header (``{"t": "header", ...}``: tool version, source and destination folders, the
options that decide the output bytes, the key's public fingerprint). Every later line is one record
about one image id (its path relative to the source folder):

- ``{"t": "pending", "id": ..., "out": ...}`` — written (and fsynced) *before* the output file is
  written, so an output present after a crash is known to be this run's own;
- ``{"t": "done", "id": ..., "out": ..., "vfe": ..., "plan": {...}, "sha256": ..., ...}`` — the
  output is complete (``plan`` is :meth:`visualmixer.Plans.to_dict`, the few bytes that, with the
  key, restore the image exactly);
- ``{"t": "skipped" | "failed", "id": ..., "reason": ...}``.

The latest record of an id wins. Records are appended in whole lines with one ``write`` on an
``O_APPEND`` descriptor followed by ``fsync``; a line cut short by a kill is dropped (and the file
truncated back to its last complete line) when the manifest is opened again.

The manifest is private: with the key, its plans restore the originals, and with ``--rename`` it
holds the original file names. It is created with mode 0600 and never inside the shared folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["Manifest", "MANIFEST_VERSION"]

MANIFEST_VERSION = 1


class Manifest:
    """An open manifest file (see the module docstring).

    Use :meth:`create` for a new run and :meth:`open` to resume one.

    Attributes
    ----------
    path : pathlib.Path
    header : dict
    records : dict
        Latest record per image id.
    """

    def __init__(self, path: Path, header: dict[str, Any], records: dict[str, dict[str, Any]]):
        self.path = Path(path)
        self.header = header
        self.records = records
        self._fd: int | None = None

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, header: dict[str, Any], *, overwrite: bool = False) -> Manifest:
        """Start a new manifest at ``path`` holding only ``header`` (mode 0600)."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"manifest {path} exists (pass --overwrite to start over)")
        path.parent.mkdir(parents=True, exist_ok=True)
        head = {"t": "header", "version": MANIFEST_VERSION, **header}
        tmp = path.with_name(f".{path.name}.new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(head, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return cls(path, head, {})

    @classmethod
    def read(cls, path: str | os.PathLike) -> Manifest:
        """Read a manifest (header and latest records) without opening it for appending."""
        path = Path(path)
        raw = path.read_bytes()
        lines = raw.split(b"\n")
        if not raw.endswith(b"\n"):
            lines = lines[:-1]  # the last line was cut short by a kill: not a record
        header: dict[str, Any] | None = None
        records: dict[str, dict[str, Any]] = {}
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise ValueError(f"{path}: line {number} is not valid JSON (damaged manifest)") from None
            if number == 1:
                if rec.get("t") != "header":
                    raise ValueError(f"{path} is not a visualmixer manifest (no header line)")
                if rec.get("version") != MANIFEST_VERSION:
                    raise ValueError(
                        f"{path}: manifest version {rec.get('version')!r}, this visualmixer "
                        f"reads version {MANIFEST_VERSION}"
                    )
                header = rec
                continue
            if "id" in rec:
                records[rec["id"]] = rec
        if header is None:
            raise ValueError(f"{path} is empty or not a visualmixer manifest")
        return cls(path, header, records)

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
        """Append records as whole lines, then fsync; update :attr:`records`."""
        recs = list(records)
        if not recs:
            return
        payload = "".join(json.dumps(r, sort_keys=True) + "\n" for r in recs).encode("utf-8")
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        view = memoryview(payload)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        for rec in recs:
            self.records[rec["id"]] = rec

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
