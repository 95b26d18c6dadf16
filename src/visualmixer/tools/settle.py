"""Settling a release: its files' metadata follows their names, not the order the work was done in.

A folder run writes its outputs in the order it computes them. For a mixed run that order is
group by group (a group is computed and written whole, :mod:`visualmixer.tools.mixrun`), and
with ``rename`` it is the order of the original names. Both are secrets of the private manifest,
and both would show in the release's file metadata: sorted by modification time — which ``tar``,
``zip`` and ``rsync -a`` carry along — the files of a mixed release come out one group after
another (the first ``k`` files are exactly one group: ``tests/test_mix_tools.py``), and renamed
files come out in the order of the names they replaced. Change times and, on some file systems
(btrfs, XFS), the directory listing follow the write order too.

So a run that wrote anything ends by *settling* the outputs: every output is written again,
atomically, in the order of its output name, and given one modification time (the settling's
start, whole seconds). Afterwards modification and change times and the listing order give the
order of the names, which the release shows anyway. Inode numbers on the disk written to do not:
the file system hands the new files the inodes just freed, in the old order — a copy of the
release (an archive, ``rsync``, an upload) carries none. The bytes do not change. An interrupted
settling leaves valid files with unequal times; the next run sees that and settles again, and a
run that finds everything done and settled touches nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from visualmixer.tools.safe_io import StopGuard, output_signature

__all__ = ["settle_outputs", "is_settled"]


def is_settled(paths: Iterable[Path]) -> bool:
    """Whether the existing files among ``paths`` all have one modification time (whole seconds)."""
    times = {int(p.stat().st_mtime_ns) for p in paths if p.is_file()}
    return len(times) <= 1 and all(t % 1_000_000_000 == 0 for t in times)


def settle_outputs(dst: Path, names: Iterable[str], guard: StopGuard, *,
                   when: int | None = None) -> dict[str, list[int] | None]:
    """Write every existing output ``dst / name`` again in name order with modification time ``when``.

    Parameters
    ----------
    dst : pathlib.Path
        The release folder.
    names : iterable of str
        Output names (relative to ``dst``); missing files are left out.
    guard : StopGuard
        Turns a write error into the run's :class:`~visualmixer.tools.errors.RunStopped`.
    when : int, optional
        Seconds since the epoch; default now.

    Returns
    -------
    dict
        Each file settled → its stat signature after settling
        (:func:`~visualmixer.tools.safe_io.output_signature`; the run records them, since the
        ones recorded when the outputs were first written no longer hold).
    """
    when = int(time.time()) if when is None else int(when)
    settled: dict[str, list[int] | None] = {}
    for name in sorted(set(names)):
        path = dst / name
        if not path.is_file():
            continue
        guard.write_output(path, path.read_bytes())
        with guard.writing(path, 0):
            os.utime(path, (when, when))
        settled[name] = output_signature(path)
    return settled
