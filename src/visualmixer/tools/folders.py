"""Obfuscating and restoring whole folders of images: the library behind ``visualmixer obfuscate``
and ``visualmixer restore``.

:func:`obfuscate_folder` mirrors the source tree into the destination. Each image's id is its path
relative to the source folder (POSIX separators, e.g. ``"cats/001.jpg"``); its output is a PNG of
the obfuscated pixels with no metadata (:mod:`visualmixer.tools.imageio`), at the same relative place, named
``NAME.png`` (``NAME.EXT.png`` when two inputs of one folder would otherwise share a name; a number
before the extension, ``NAME.EXT-2.png``, when that is taken too) or, with
``rename=True``, an opaque keyed name (file names such as ``jane_doe.jpg`` leak). A private
:class:`~visualmixer.tools.manifest.Manifest` records the options, each image's plan, achieved VFE, output
name and status; it lives next to the key (or where the caller says), never in the destination.

Guarantees
----------
- Nothing is ever written inside the source folder; a destination equal to it, inside it, or
  containing it is refused, and so is one whose sub-folders lead into it through a symbolic link
  (each output's folder is resolved, before the run and at every write).
- Existing outputs are not replaced unless ``overwrite=True``; every output is written to a temporary
  name and renamed, so a crash leaves no half files.
- Resume: rerunning the same command after an interruption (Ctrl-C, ``kill -9``) skips the images
  already complete and finishes the rest; the final destination is byte-identical to an uninterrupted
  run. A finished output whose size, modification time and inode are as recorded is taken as
  intact without reading it; any other is hashed, and so is every one with ``verify_outputs=True``
  (:class:`~visualmixer.tools.safe_io.OutputCheck`); a damaged one is done again. Images are
  processed in fixed chunks of the sorted id list (``batch_size``) and a chunk is always computed
  whole, with one intra-op thread, so every image's bytes are the same however the run is split,
  resumed or distributed.
- Bad files (empty, truncated, not an image, unsupported mode) are recorded as *failed* with a
  one-line reason; images over the decompression-bomb limit are *skipped* with a reason; the run
  goes on. Files without an image extension are ignored (never copied: they could leak).
- Memory stays flat: source bytes are read only for the chunks in flight.
- One run per manifest at a time (:mod:`visualmixer.tools.lock`, held by this process also with
  ``workers`` or ``dask``): a second run raises :class:`~visualmixer.tools.errors.DestinationBusy`.
- Faults (:mod:`visualmixer.tools.safe_io`): a source file that vanishes, cannot be read or changes
  while read fails that image only; a write that fails for a reason every later write would share
  (disk full, permission, read-only, I/O error) stops the run with a one-line
  :class:`~visualmixer.tools.errors.RunStopped`; everything finished is recorded, rerunning resumes.
- The pieces: :mod:`~visualmixer.tools.layout` (options, names, checks), :mod:`~visualmixer.tools.chunks`
  (the per-chunk work in workers), this module (the runs).
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from visualmixer.tools import imageio as vio
from visualmixer.tools.chunks import obfuscate_chunk
from visualmixer.tools.distributed import map_unordered
from visualmixer.tools.errors import first_few, foreign_outputs
from visualmixer.tools.layout import (
    JPEG_EXT,
    TOOL_VERSION,
    FolderOptions,
    RunSummary,
    check_folders,
    check_parallel,
    default_manifest_path,
    find_manifest,
    list_images,
    listed_images,
    manifest_location,
    note_lock_and_damage,
    out_format,
    output_names,
    recorded_ids,
    recorded_outputs,
    resolved_path,
    warner,
)
from visualmixer.tools.lock import RunLock
from visualmixer.tools.manifest import sigs_records
from visualmixer.tools.mixrun import (
    MIX_MANIFEST_VERSION,
    SWITCHED_MANIFEST_VERSION,
    mixed_todo,
    prepare_mix,
    run_mixed,
    say_small,
    settle_groups,
)
from visualmixer.tools.progress import progress as progress_bar
from visualmixer.tools.restoring import restore_folder
from visualmixer.tools.resume_check import check_resumable, generator_version
from visualmixer.tools.safe_io import (
    OutputCheck,
    StopGuard,
    check_no_way_into,
    damaged_note,
    read_source,
    source_signature,
)
from visualmixer.tools.settle import is_settled, settle_outputs

__all__ = [
    "FolderOptions",
    "RunSummary",
    "default_manifest_path",
    "find_manifest",
    "list_images",
    "obfuscate_folder",
    "output_names",
    "restore_folder",
]

# -- obfuscate ------------------------------------------------------------------------------------
def _open_obfuscate_manifest(man_path: Path, header: dict, *, overwrite: bool, dst_p: Path,
                             say: Callable[[str], None]):
    """Resume the run recorded in ``man_path`` (same options) or start a new manifest."""
    from visualmixer.tools.manifest import Manifest

    if not man_path.exists() or overwrite:
        if overwrite and dst_p.exists():
            vio.remove_stale_temps(dst_p)
        return Manifest.create(man_path, header, overwrite=overwrite)
    man = Manifest.open(man_path)
    check_resumable(man_path, man, header)
    removed = vio.remove_stale_temps(dst_p) if dst_p.exists() else 0
    if removed:
        say(f"removed {removed} temporary file(s) left by an interrupted run")
    return man


def _earlier_outputs(man_path: Path) -> set[str]:
    """The outputs recorded by the manifest an overwriting run is about to replace."""
    from visualmixer.tools.manifest import Manifest

    try:
        return set(recorded_outputs(Manifest.read(man_path)).values()) if man_path.exists() else set()
    except (OSError, ValueError):  # (unreadable: nothing to say about it)
        return set()


def _say_left_behind(earlier: set[str], man, dst_p: Path, say: Callable[[str], None]) -> None:
    """Name the outputs of the run an overwriting run started over that it did not write again
    (their images left SRC): they stay in DST, and a mixed one holds regions of other images."""
    left = sorted(o for o in earlier - set(recorded_outputs(man).values()) if (dst_p / o).exists())
    if left:
        say(f"{len(left)} output(s) of the run this one started over are not part of it (their images have left "
            f"SRC) and stay in DST: {first_few(left)}; delete them if "
            "they should not be shared")


def _list_sources(src_p: Path, options: FolderOptions, summary: RunSummary,
                  say: Callable[[str], None]) -> list[str]:
    linked: list[str] = []
    ids, ignored = list_images(src_p, linked=linked)
    summary.ignored = len(ignored)
    if linked:  # (a link may lead anywhere, into DST or round in a loop: never followed)
        shown = first_few(linked)
        say(f"{len(linked)} linked folder(s) in SRC not followed, their images left out: {shown}; "
            "copy them into SRC (or pass the folder they lead to as SRC of a run of their own)")
    if options.format == "same" and any(posixpath.splitext(i)[1].lower() in JPEG_EXT for i in ids):
        say("format='same': JPEG inputs are written as JPEG again (lossy), so restore cannot "
            "give the exact pixels back for them; use format='png' (default) for exact restore")
    return ids


def _obfuscate_header(src_p: Path, dst_p: Path, key: Any, options: FolderOptions,
                      batch_size: int, images: int) -> dict:
    """What a resume must match (and what restore needs to know; ``images`` is informative)."""
    return {"images": int(images),
        "tool": TOOL_VERSION, "command": "obfuscate", "src": str(src_p), "dst": str(dst_p),
        "dst_name": dst_p.name, "key_fingerprint": key.fingerprint,
        "options": options.as_dict(), "batch_size": int(batch_size),
        "generator": generator_version(),
    }


def _usable_ids(ids: list[str], summary: RunSummary) -> list[str]:
    usable = []
    for image_id in ids:
        try:
            image_id.encode("utf-8")
        except UnicodeEncodeError:
            summary.failed += 1
            summary.problems.append((image_id.encode("utf-8", "replace").decode(), "failed",
                                     "file name is not valid UTF-8"))
            continue
        usable.append(image_id)
    return usable


def _source_changed(rec: dict, path: Path) -> bool:
    sig = rec.get("src_sig")
    if sig is None:  # manifests of earlier runs do not record it
        return False
    try:
        return source_signature(path.stat()) != sig
    except OSError:
        return False  # vanished since: keep its output


def _obfuscate_todo(ids, names, man, src_p: Path, dst_p: Path, check: OutputCheck,
                    summary: RunSummary, say: Callable[[str], None]) -> set[str]:
    """The ids this run must (re)do; counts the finished ones."""
    todo: set[str] = set()
    changed = damaged = 0
    for image_id in ids:
        rec = man.records.get(image_id)
        out = dst_p / names[image_id]
        if rec and rec.get("t") == "done" and rec.get("out") == names[image_id] and out.exists():
            if not check.intact(out, rec):
                damaged += 1
            elif not _source_changed(rec, src_p / image_id):
                summary.already += 1
                continue
            else:
                changed += 1
        todo.add(image_id)
    if changed:
        say(f"{changed} source file(s) changed since they were obfuscated: done again")
    if damaged:
        say(damaged_note(damaged, "done again"))
    return todo


def _record_results(results, *, todo, names, sigs, dst_p: Path, man, guard: StopGuard,
                    summary: RunSummary) -> int:
    """Write one chunk's outputs between its pending and done records; return the count."""
    mine = [r for r in results if r["id"] in todo]
    guard.append(man, [{"t": "pending", "id": r["id"], "out": names[r["id"]]}
                       for r in mine if r["t"] == "done"])
    records = []
    for r in mine:
        image_id = r["id"]
        if r["t"] == "done":
            data = r.pop("data")
            r["out_sig"] = guard.write_output(dst_p / names[image_id], data)
            r["out"] = names[image_id]
            r["bytes"] = len(data)
            r["src_sig"] = sigs.pop(image_id, None)
            summary.done += 1
        else:
            sigs.pop(image_id, None)
            if r["t"] == "skipped":
                summary.skipped += 1
            else:
                summary.failed += 1
            summary.problems.append((image_id, r["t"], r["reason"]))
        records.append(r)
    guard.append(man, records)
    return len(mine)


def obfuscate_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    key: Any,
    *,
    key_path: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    options: FolderOptions | None = None,
    overwrite: bool = False,
    workers: int = 1,
    dask: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
    verify_outputs: bool = False,
) -> RunSummary:
    """Obfuscate every image under ``src`` into a mirrored tree under ``dst`` (module docstring).

    Parameters
    ----------
    src, dst : str or path-like
        Source folder (read only) and destination folder (created).
    key : visualmixer.Key
        Master key.
    key_path : path-like, optional
        Where the key file is; the manifest goes next to it unless ``manifest`` is given.
    manifest : path-like, optional
        Manifest path (must not be inside ``src`` or ``dst``).
    options : FolderOptions
        Output-deciding options.
    overwrite : bool
        Start over: replace existing outputs and the manifest.
    workers : int
        Worker processes (1: this process). With ``dask``, the local cluster's worker count.
    dask : str, optional
        ``"local"`` or ``"tcp://HOST:PORT"`` (:mod:`visualmixer.tools.distributed`).
    batch_size : int
        Images per chunk (a chunk is one job; same-size images of a chunk share one
        :func:`visualmixer.obfuscate` call). Part of what decides the output bytes only through
        the float arithmetic of one batched call; the tools keep it fixed per destination.
    progress : bool
        Show a progress bar (images/s, ETA) on stderr.
    warn : callable, optional
        Called with each warning line (default: collected in the summary only).
    verify_outputs : bool
        On a resume, hash every finished output to check it is as recorded (default: only those
        whose size, modification time or inode is not as recorded; module docstring).

    Returns
    -------
    RunSummary

    Raises
    ------
    visualmixer.tools.errors.DestinationBusy
        Another run holds this manifest's lock (:mod:`visualmixer.tools.lock`).
    visualmixer.tools.errors.RunStopped
        The destination or the manifest cannot be written (disk full, permission, read-only,
        I/O error); everything finished is recorded, rerunning resumes.
    ValueError, FileNotFoundError, FileExistsError
        Bad arguments, refused folders, a manifest of other options or an unreadable header.
    """
    t0 = time.perf_counter()
    options = options or FolderOptions()
    check_parallel(workers, dask, batch_size)
    src_p, dst_p = resolved_path(src), resolved_path(dst)
    check_folders(src_p, dst_p)
    man_path = manifest_location(manifest, key_path, src_p, dst_p)
    summary = RunSummary(manifest=man_path)
    say = warner(summary, warn)
    with RunLock(man_path, command="obfuscate", target=str(dst_p)) as lock, \
            RunLock.for_destination(dst_p, command="obfuscate"):
        ids = _usable_ids(_list_sources(src_p, options, summary, say), summary)
        header = _obfuscate_header(src_p, dst_p, key, options, batch_size, len(ids))
        if overwrite:  # the run owns DST's files: its resume (without overwrite) replaces the older ones
            header["took_over_dst"] = True
        plan = None
        if options.mix is not None:
            plan = prepare_mix(ids, src_p, key, options, workers=workers, dask=dask, batch_size=batch_size)
            header["version"] = SWITCHED_MANIFEST_VERSION if options.mix_balanced else MIX_MANIFEST_VERSION
        fresh = overwrite or not man_path.exists()
        earlier = _earlier_outputs(man_path) if overwrite else set()
        with StopGuard(man_path, 0).writing(man_path, 4096):
            man = _open_obfuscate_manifest(man_path, header, overwrite=overwrite, dst_p=dst_p, say=say)
            if listed_images(man) != len(ids):
                man.append([{"t": "listing", "id": "", "images": len(ids)}])
        try:
            note_lock_and_damage(lock, man, say)
            current = set(ids)  # (recorded images that left SRC keep their names)
            names = output_names(ids + [i for i in recorded_ids(man) if i not in current], fmt=options.format,
                                 rename=options.rename, key=key, keep=recorded_outputs(man))
            _obfuscate_run(plan, ids, names, src_p=src_p, dst_p=dst_p, key=key, options=options,
                           man=man, summary=summary, overwrite=overwrite, workers=workers, dask=dask,
                           batch_size=batch_size, show=progress, say=say,
                           check=OutputCheck(man, full=verify_outputs))
            _say_left_behind(earlier, man, dst_p, say)
        except KeyboardInterrupt as exc:  # the manifest records this run (and, with overwrite, that
            exc.run_recorded = True  # it took DST over): its resume needs no overwrite
            raise
        except FileExistsError:  # DST holds another run's outputs: a refused run leaves no manifest
            if fresh:
                man.close()
                man_path.unlink(missing_ok=True)
            raise
        finally:
            man.close()
    return _finish(summary, t0)


def _obfuscate_run(plan, ids, names, *, src_p, dst_p, key, options, man, summary, overwrite,
                   workers, dask, batch_size, show, say, check) -> None:
    """The work of a run, plain or mixed, then the settling of renamed and mixed releases."""
    if not (overwrite or man.header.get("took_over_dst")) and dst_p.is_dir():  # another key's or run's
        # images: never mix with them (unless this run was started over them with overwrite)
        foreign = [i for i in list_images(dst_p)[0] if i not in man.written]
        if foreign:
            raise foreign_outputs(dst_p, foreign)
    check_no_way_into(dst_p, names.values(), {"SRC": src_p})  # a link in DST must not lead into SRC
    if plan is not None:
        _obfuscate_mixed(plan, ids, names, src_p=src_p, dst_p=dst_p, key=key, options=options,
                         man=man, summary=summary, overwrite=overwrite, workers=workers,
                         dask=dask, batch_size=batch_size, show=show, say=say, check=check)
    else:
        todo = _obfuscate_todo(ids, names, man, src_p, dst_p, check, summary, say)
        guard = StopGuard(man.path, len(todo), never_inside={"SRC": src_p})
        guard.mkdir(dst_p)
        _sign_checked(check, todo, names, man, guard)
        _run_obfuscate(ids, todo, names, src_p=src_p, dst_p=dst_p, key=key, options=options,
                       man=man, guard=guard, summary=summary, workers=workers, dask=dask,
                       batch_size=batch_size, show=show)
    if options.mix is not None or options.rename:  # their write order is a secret: settle.py
        released = {r["out"]: r for r in man.done() if r.get("out")}
        if summary.done or not is_settled(dst_p / n for n in released):
            guard = StopGuard(man.path, len(released), never_inside={"SRC": src_p})
            guard.append(man, sigs_records(settle_outputs(dst_p, released, guard)))


def _sign_checked(check: OutputCheck, todo: set[str], names: dict[str, str], man, guard: StopGuard) -> None:
    """Record the signatures of the outputs this resume hashed and found intact (records of an
    earlier version, outputs copied back), so that the next rerun need not read them again;
    outputs this run writes again get theirs with their new ``done`` records."""
    again = {names[i] for i in todo}
    guard.append(man, sigs_records({out: sig for out, sig in check.fresh.items() if out not in again}))


def _finish(summary: RunSummary, t0: float) -> RunSummary:
    summary.seconds = time.perf_counter() - t0
    return summary


def _obfuscate_mixed(plan, ids, names, *, src_p, dst_p, key, options, man, summary, overwrite,
                     workers, dask, batch_size, show, say, check) -> None:
    """A mixed run (:mod:`visualmixer.tools.mixrun`): groups are the unit of work."""
    def changed(image_id: str, rec: dict) -> bool:
        return _source_changed(rec, src_p / image_id)

    if not overwrite:
        settle_groups(plan, man, dst_p, key, options, changed=changed, say=say, check=check)
    say_small(plan, options.mix, say)
    todo = mixed_todo(plan, names, man, dst_p, overwrite=overwrite, summary=summary, changed=changed,
                      say=say, check=check)
    guard = StopGuard(man.path, len(todo), never_inside={"SRC": src_p})
    guard.mkdir(dst_p)
    _sign_checked(check, todo, names, man, guard)
    if plan.failures:
        guard.append(man, plan.failures)
        for r in plan.failures:
            summary.skipped += r["t"] == "skipped"
            summary.failed += r["t"] != "skipped"
            summary.problems.append((r["id"], r["t"], r["reason"]))
    out_formats = {i: out_format(i, options.format) for i in ids}

    def record(results, sigs) -> int:
        return _record_results(results, todo=todo, names=names, sigs=sigs, dst_p=dst_p, man=man,
                               guard=guard, summary=summary)

    bar = progress_bar(total=len(todo), enabled=show, desc="obfuscate (mix)", unit="img")
    try:
        run_mixed(plan, todo, names, out_formats, src_p=src_p, key=key, options=options,
                  batch_size=batch_size, workers=workers, dask=dask, record=record, bar=bar)
    finally:
        bar.close()


def _run_obfuscate(ids, todo, names, *, src_p, dst_p, key, options, man, guard, summary,
                   workers, dask, batch_size, show) -> None:
    """The chunk loop: read sources in the driver, compute anywhere, write in the driver."""
    out_formats = {i: out_format(i, options.format) for i in ids}
    chunks = [ids[i:i + int(batch_size)] for i in range(0, len(ids), int(batch_size))]
    sigs: dict[str, list[int] | None] = {}

    def jobs() -> Iterator[tuple[list[str], tuple]]:
        for chunk in chunks:
            if not any(i in todo for i in chunk):
                continue
            items = []
            for i in chunk:
                data, why, sig = read_source(src_p / i)
                sigs[i] = sig
                items.append((i, out_formats[i], data, why))
            yield chunk, (items,)

    bar = progress_bar(total=len(todo), enabled=show, desc="obfuscate", unit="img")
    try:
        for _chunk, results in map_unordered(
            obfuscate_chunk, jobs(), workers=workers, dask=dask, shared=(key, options.as_dict())
        ):
            bar.update(_record_results(results, todo=todo, names=names, sigs=sigs, dst_p=dst_p,
                                       man=man, guard=guard, summary=summary))
    finally:
        bar.close()
