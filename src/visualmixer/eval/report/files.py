"""Writing report files: each one whole or not at all (temporary file + rename), the page last,
so that a failure while drawing leaves the previous report as it was; pictures an earlier report
wrote in the report's picture folder that the new page does not show are removed (only those: the
folder's list ``.report-pictures`` names them, so no file the report did not write is touched)."""

from __future__ import annotations

import os
from pathlib import Path

from visualmixer.core.atomic import replace_atomically

__all__ = ["prepare_out_dir", "write_file", "write_report"]


#: The file in a report's picture folder that lists the pictures the report wrote there.
PICTURE_LIST = ".report-pictures"


def prepare_out_dir(out_dir: str | Path, *, inputs: tuple[str | Path, ...] = ()) -> Path:
    """Check before any work that the output folder ``out_dir`` can be one, so that a path that
    cannot (an existing file, a file among its parents, a parent without write permission, a
    folder inside one of the ``inputs``: the data folders the run reads) fails at once with a
    ``ValueError`` naming ``out_dir``. Nothing is created here (a run refused by a later check
    leaves no empty folder); the report's writers create it. Returns it as a Path."""
    path = Path(out_dir)
    for data in inputs:
        root = Path(data).resolve()
        if path.resolve() == root or root in path.resolve().parents:
            where = "the data folder" if path.resolve() == root else "inside the data folder"
            raise ValueError(f"out_dir: {path} is {where} {data}: the report would be read as images by "
                             "the next run over it; give a folder outside it")
    if path.exists() and not path.is_dir():
        raise ValueError(f"out_dir: {path} exists and is not a folder: give a folder (it is created if missing)")
    parent = path.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"out_dir: {path} cannot be created as a folder ({parent} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"out_dir: {path} cannot be created as a folder (no write permission in {parent})")
    return path


def write_file(path: str | Path, data: bytes | str) -> Path:
    """``data`` (text as UTF-8) into ``path``, atomically (mode 0644)."""
    path = Path(path)
    replace_atomically(path, data.encode() if isinstance(data, str) else data, mode=0o644, suffix=".tmp")
    return path


def write_report(out_dir: str | Path, files: dict[str, bytes | str], page: str, *,
                 pictures: str | None = None) -> Path:
    """Write ``files`` (relative name -> content) under ``out_dir``, then the page ``page``
    (a name among ``files``) last; with ``pictures`` (a sub-folder), ``*.png`` files in it that
    ``files`` does not name are removed. Returns the page's path."""
    out_dir = Path(out_dir)
    for name, data in files.items():
        if name != page:
            (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            write_file(out_dir / name, data)
    if pictures is not None:
        folder = out_dir / pictures
        shown = sorted(n[len(pictures) + 1:] for n in files if n.startswith(pictures + "/"))
        try:
            earlier = (folder / PICTURE_LIST).read_text(encoding="utf-8").splitlines()
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            earlier = []
        folder.mkdir(parents=True, exist_ok=True)
        write_file(folder / PICTURE_LIST, "".join(n + "\n" for n in shown))
        for name in set(earlier) - set(shown):  # (only names this module wrote: plain file names)
            if name and "/" not in name and name not in (".", ".."):
                (folder / name).unlink(missing_ok=True)
    return write_file(out_dir / page, files[page])
