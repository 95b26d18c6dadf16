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

Settling reads every output anyway, so it checks each against its ``done`` record (size and
SHA-256) and returns the new stat signature only of those that match: the run records them
(``sigs`` lines), so a rerun takes them as intact without reading them. One that does not match
(damaged while the run wrote other images, or while its source was away and nothing redid it) is
recorded with no signature, so the next rerun that finds its source hashes it and does it again; a signature recorded
before for it no longer vouches for it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from visualmixer.tools.safe_io import StopGuard, bytes_as_recorded, output_signature

__all__ = ["settle_outputs", "is_settled"]


def is_settled(paths: Iterable[Path]) -> bool:
    """Whether the existing files among ``paths`` all have one modification time (whole seconds)."""
    times = {int(p.stat().st_mtime_ns) for p in paths if p.is_file()}
    return len(times) <= 1 and all(t % 1_000_000_000 == 0 for t in times)


def settle_outputs(dst: Path, records: dict[str, dict], guard: StopGuard, *,
                   when: int | None = None) -> dict[str, list[int] | None]:
    """Write every existing output ``dst / name`` again in name order with modification time ``when``.

    Parameters
    ----------
    dst : pathlib.Path
        The release folder.
    records : dict
        Output name (relative to ``dst``) → its ``done`` record; missing files are left out.
    guard : StopGuard
        Turns a write error into the run's :class:`~visualmixer.tools.errors.RunStopped`.
    when : int, optional
        Seconds since the epoch; default now.

    Returns
    -------
    dict
        Each file settled → its stat signature after settling
        (:func:`~visualmixer.tools.safe_io.output_signature`; the run records them, since the
        ones recorded when the outputs were first written no longer hold), or ``None`` for a file
        whose bytes are not those of its record (:func:`~visualmixer.tools.safe_io.bytes_as_recorded`):
        recorded as such, it is hashed, and done again, by the next rerun.
    """
    when = int(time.time()) if when is None else int(when)
    settled: dict[str, list[int] | None] = {}
    for name in sorted(records):
        path = dst / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        guard.write_output(path, data)
        with guard.writing(path, 0):
            os.utime(path, (when, when))
        sig = output_signature(path)
        settled[name] = sig if sig is not None and bytes_as_recorded(data, records[name]) else None
    return settled
