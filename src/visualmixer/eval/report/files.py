"""Writing report files: each one whole or not at all (temporary file + rename), the page last,
so that a failure while drawing leaves the previous report as it was; pictures an earlier run
left in the report's picture folder that the new page does not show are removed."""

from __future__ import annotations

from pathlib import Path

from visualmixer.core.atomic import replace_atomically

__all__ = ["write_file", "write_report"]


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
        keep = {(out_dir / name).resolve() for name in files}
        for old in (out_dir / pictures).glob("*.png"):
            if old.resolve() not in keep:
                old.unlink(missing_ok=True)
    return write_file(out_dir / page, files[page])
