"""Mixed folder runs (``obfuscate_folder(..., options=FolderOptions(mix=K))``, ``visualmixer
obfuscate --mix K``): keyed region mixing across the images of one class
(:mod:`visualmixer.core.mixing`), with the resume, manifest and worker guarantees of plain runs.

- **Labels** are the first-level sub-folders of SRC (``SRC/<class>/.../<image>``). A tree with
  images directly in SRC, or with a single class, is refused: mixing puts images of one class
  together, so the classes must be known.
- **Survey.** Every image is decoded once first (in the workers, when there are any): broken files
  are recorded failed/skipped as in plain runs and left out of the groups; all images of a class
  must have one size (``(C, H, W)``), else the run is refused naming the files; with
  ``grouping="similar"`` each image's region-mean mosaic is kept (a few floats per region).
- **Groups** (:func:`~visualmixer.core.mixing.make_groups`, per class): ``"random"`` (keyed) or
  ``"similar"`` (look-alike), ``k`` per group, the remainder of a class joining its last group
  (``k`` to ``2k - 1`` members), a class of ``2 <= n < k`` images one group of ``n``, a class of
  one image a group of one (shuffled inside its regions only, not mixed: a warning says so).
  Groups never span classes.
- **Unit of work: a group.** Chunks are runs of whole groups in class order (a chunk closes before
  the group that would take it past ``batch_size`` images; a larger group is a chunk alone), so a
  group is computed, written and recorded whole. On a resume the groups are formed again; a group
  whose members are all recorded ``done`` with the same group record and whose outputs exist is
  left alone, any other group is done again whole. Chunks are fixed by the groups and
  ``batch_size``, so the result is byte-identical to an undisturbed run.
- **Share** (``mix_share``): only a keyed share of the region positions is exchanged in each group
  (:func:`~visualmixer.core.mixing.mix`'s ``share``); recorded in the group record when not 1.
- **Balanced** (``mix_balanced``): every collage holds each group member's regions at the same
  number of positions (:func:`~visualmixer.core.mixing.mix`'s ``balanced``); recorded when set.
- **Manifest.** Each member's ``done`` record carries its group record (``mix``:
  :func:`~visualmixer.tools.mixchunks.group_record`) beside its in-region plan; the header's format
  version is 2 (:data:`MIX_MANIFEST_VERSION`), so releases that cannot unmix refuse it in one line;
  3 (:data:`SWITCHED_MANIFEST_VERSION`) for balanced runs, whose groups are dealt by the switched
  design: a release from before it would neither restore them nor resume the run without re-dealing
  every finished group, so it refuses the manifest instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visualmixer.tools.distributed import map_unordered
from visualmixer.tools.errors import first_few
from visualmixer.tools.mixchunks import group_record, mix_chunk, survey_chunk
from visualmixer.tools.safe_io import OutputCheck, damaged_note, read_source

__all__ = ["MIX_MANIFEST_VERSION", "SWITCHED_MANIFEST_VERSION", "MixPlan", "prepare_mix", "settle_groups",
           "mixed_todo", "run_mixed", "pack_chunks", "restore_mixed_jobs", "say_small"]

#: Manifest format version of mixed runs (plain runs keep writing version 1).
MIX_MANIFEST_VERSION = 2
SWITCHED_MANIFEST_VERSION = 3


@dataclass
class MixPlan:
    """The groups of a mixed run, and what the survey found.

    Attributes
    ----------
    groups : list of dict
        Group records in class order (:func:`~visualmixer.tools.mixchunks.group_record`).
    failures : list of dict
        ``failed`` / ``skipped`` manifest records of the images that could not be decoded.
    found : dict
        The survey of each decoded image (``shape``, and ``mosaic`` for ``"similar"``).
    kept : list of dict
        Finished groups kept as recorded although the source set changed (:func:`settle_groups`).
    small : list of str
        The classes with fewer than ``k`` images to group, as ``"name (count)"`` (:func:`say_small`).
    """

    groups: list[dict]
    failures: list[dict] = field(default_factory=list)
    found: dict[str, dict] = field(default_factory=dict)
    kept: list[dict] = field(default_factory=list)
    small: list[str] = field(default_factory=list)


def class_of(image_id: str) -> str:
    return image_id.split("/", 1)[0]


def check_labelled(ids: list[str]) -> None:
    """Refuse a tree without classes (images directly in SRC, or a single class folder)."""
    layout = "SRC/<class>/<image> (one sub-folder of SRC per class, like torchvision's ImageFolder)"
    top = [i for i in ids if "/" not in i]
    if top:
        shown = first_few(top)
        raise ValueError(
            f"mix: {len(top)} image(s) lie directly in SRC ({shown}), so they have no class: mixing "
            f"puts images of one class together and takes the class from the folder; arrange SRC as "
            f"{layout}, or obfuscate without mix"
        )
    classes = sorted({class_of(i) for i in ids})
    if len(classes) < 2:
        which = f"a single class folder ({classes[0]}/)" if classes else "no images"
        raise ValueError(
            f"mix: SRC holds {which}: mixing needs labelled images, one sub-folder per class, "
            f"{layout}; with one class the folder names no labels (obfuscate without mix)"
        )


def _survey(ids, src_p: Path, key, opts: dict, *, workers, dask, batch_size) -> tuple[dict, list]:
    def jobs() -> Iterator[tuple[None, tuple]]:
        for start in range(0, len(ids), int(batch_size)):
            items = []
            for i in ids[start:start + int(batch_size)]:
                data, why, _sig = read_source(src_p / i)
                items.append((i, data, why))
            yield None, (items,)

    found: dict[str, dict] = {}
    failures = []
    for _tag, results in map_unordered(survey_chunk, jobs(), workers=workers, dask=dask,
                                       shared=(key, opts)):
        for r in results:
            if r["t"] == "ok":
                found[r["id"]] = r
            else:
                failures.append(r)
    return found, failures


def _check_sizes(found: dict[str, dict]) -> None:
    per_class: dict[str, dict[tuple, list[str]]] = {}
    for image_id in sorted(found):
        per_class.setdefault(class_of(image_id), {}).setdefault(tuple(found[image_id]["shape"]), []).append(image_id)
    for cls, sizes in per_class.items():
        if len(sizes) > 1:
            parts = []
            for shape, members in sorted(sizes.items(), key=lambda kv: -len(kv[1])):
                names = first_few(members)
                parts.append(f"{shape[2]}x{shape[1]} with {shape[0]} channel(s): {len(members)} ({names})")
            raise ValueError(
                f"mix: the images of class {cls!r} differ in size (width x height) or channels — "
                + "; ".join(parts) + ". Regions are exchanged between images of a group, so every "
                "image of a class must have one size (resize them first), or obfuscate without mix"
            )


def _class_groups(cls_ids: list[str], found: dict, key, options) -> list[dict]:
    import torch

    from visualmixer.core.mixing import MixGroups, make_groups
    from visualmixer.core.regions import resolve_region

    c, h, w = found[cls_ids[0]]["shape"]
    region = resolve_region(options.region, h, w)
    labels = torch.zeros(len(cls_ids), dtype=torch.long)
    if options.grouping == "similar":
        # the mosaics are what make_groups pools the images to; region=1 keeps them as they are
        mosaics = torch.stack([found[i]["mosaic"] for i in cls_ids])
        mg = make_groups(labels, key=key, ids=cls_ids, k=options.mix, grouping="similar",
                         images=mosaics, region=1)
        mg = MixGroups(mg.members, region, mg.k, mg.grouping)
    else:
        mg = make_groups(labels, key=key, ids=cls_ids, k=options.mix, grouping="random", region=region)
    return [group_record([cls_ids[j] for j in row if j >= 0], region=region, k=options.mix,
                         grouping=options.grouping, share=options.mix_share, balanced=options.mix_balanced)
            for row in mg.members.tolist()]


def prepare_mix(ids: list[str], src_p: Path, key, options, *, workers: int, dask, batch_size: int) -> MixPlan:
    """Check the layout, survey the images and form the groups (module docstring)."""
    check_labelled(ids)
    opts = {**options.as_dict(), "grouping": options.grouping}
    found, failures = _survey(ids, src_p, key, opts, workers=workers, dask=dask, batch_size=batch_size)
    _check_sizes(found)
    groups, small = _form_groups(sorted(found), found, key, options)
    return MixPlan(groups, failures, found, small=small)


def say_small(plan: MixPlan, k: int, say: Callable[[str], None]) -> None:
    """Warn about the classes with fewer than ``k`` images to group (after :func:`settle_groups`,
    which groups only the images outside the finished groups it keeps)."""
    if plan.small:
        say(f"mix={k}: fewer images than that to group in {len(plan.small)} class(es) "
            f"({first_few(plan.small, 5)}): each forms one "
            "smaller group; a group of one image is only shuffled inside its regions, not mixed")


def _form_groups(ids: list[str], found: dict, key, options) -> tuple[list[dict], list[str]]:
    """Group records of ``ids`` (sorted), class by class, and the classes smaller than ``k``."""
    by_class: dict[str, list[str]] = {}
    for image_id in ids:
        by_class.setdefault(class_of(image_id), []).append(image_id)
    groups: list[dict] = []
    small = []
    for cls, cls_ids in by_class.items():  # a loop over classes
        groups += _class_groups(cls_ids, found, key, options)
        if len(cls_ids) < options.mix:
            small.append(f"{cls} ({len(cls_ids)})")
    return groups, small


def _finished_groups(man, dst_p: Path, changed: Callable[[str, dict], bool], check: OutputCheck,
                     present: set[str]) -> tuple[list[dict], list[str]]:
    """The groups the manifest records as finished: every member ``done`` with the same group
    record, its output present as recorded (``check``), and its source unchanged — or, where a
    member has left SRC (not in ``present``), whatever became of the others' sources: doing the
    group again would lose the member that left, whose regions are in the group's outputs. Also
    the members kept so although their source changed."""
    seen: dict[tuple, dict] = {}
    for rec in man.done():
        if "mix" in rec:
            seen.setdefault(tuple(rec["mix"]["ids"]), rec["mix"])
    finished, stale = [], []
    for ids, grec in seen.items():
        recs = [man.records.get(i) or {} for i in ids]
        if not all(r.get("t") == "done" and r.get("mix") == grec and check.intact(dst_p / r["out"], r)
                   for r in recs):
            continue
        moved = [i for i, r in zip(ids, recs, strict=True) if i in present and changed(i, r)]
        if not moved or not set(ids) <= present:
            finished.append(grec)
            stale += moved
    return finished, stale


def settle_groups(plan: MixPlan, man, dst_p: Path, key, options, *,
                  changed: Callable[[str, dict], bool], say: Callable[[str], None],
                  check: OutputCheck) -> None:
    """Keep finished groups when the source set changed since they were written.

    After an interruption the groups formed again are the recorded ones (nothing changed), and
    the run goes on as if undisturbed. When images were added, deleted or changed, forming the
    groups again would regroup finished images and overwrite their outputs — and an image whose
    source was deleted since could then never be restored. So every finished group is kept as
    recorded, and only the other images are grouped (among themselves, by the same rules).
    ``check`` (:class:`~visualmixer.tools.safe_io.OutputCheck`) says which outputs are as recorded.
    """
    present = set(plan.found) | {r["id"] for r in plan.failures}
    finished, stale = _finished_groups(man, dst_p, changed, check, present)
    if stale:
        say(f"{len(stale)} image(s) changed in SRC since their mixing group was written, beside a member "
            f"that has left SRC ({first_few(stale)}): their groups "
            "are kept as released, with the earlier version of these images, because doing a group "
            "again would lose the member that left (its regions are in the group's outputs); "
            "overwrite=True starts over from SRC as it is")
    _keep_recorded_deals(plan, finished, say)
    computed = {tuple(g["ids"]) for g in plan.groups}
    if all(tuple(g["ids"]) in computed for g in finished):
        return
    kept_ids = {i for g in finished for i in g["ids"]}
    plan.kept = finished
    plan.failures = [r for r in plan.failures if r["id"] not in kept_ids]
    plan.groups, plan.small = _form_groups([i for i in sorted(plan.found) if i not in kept_ids],
                                           plan.found, key, options)
    say(f"the source changed since the finished groups were written: {len(finished)} finished "
        f"group(s) are kept as recorded, the {sum(len(g['ids']) for g in plan.groups)} other "
        "image(s) are grouped among themselves")


def _keep_recorded_deals(plan: MixPlan, finished: list[dict], say: Callable[[str], None]) -> None:
    """A finished group keeps the record it was made with where only the format differs (e.g. a
    balanced group dealt cyclically by an earlier release, format version 3): it is neither
    re-dealt nor re-written; new groups get this release's deal."""
    recorded = {tuple(g["ids"]): g for g in finished}
    kept = 0
    for n, rec in enumerate(plan.groups):
        old = recorded.get(tuple(rec["ids"]))
        if old is not None and old != rec and _same_but_format(old, rec):
            plan.groups[n] = old
            kept += 1
    if kept:
        say(f"{kept} finished group(s) keep the record of the release that made them (e.g. the cyclic "
            "balanced deal of format version 3); overwrite=True re-deals them")


def _same_but_format(a: dict, b: dict) -> bool:
    fmt = ("version", "design")
    return {k: v for k, v in a.items() if k not in fmt} == {k: v for k, v in b.items() if k not in fmt}


def pack_chunks(groups: list[dict], batch_size: int) -> list[list[dict]]:
    """Runs of whole groups of at most ``batch_size`` images (a larger group alone)."""
    chunks: list[list[dict]] = []
    current: list[dict] = []
    count = 0
    for rec in groups:
        n = len(rec["ids"])
        if current and count + n > int(batch_size):
            chunks.append(current)
            current, count = [], 0
        current.append(rec)
        count += n
    if current:
        chunks.append(current)
    return chunks


def _group_state(rec: dict, names: dict, man, dst_p: Path, changed: Callable[[str, dict], bool],
                 check: OutputCheck) -> tuple[bool, int]:
    """Whether the group is done, and how many of its members have an output recorded done that
    is there but not as recorded (damaged or edited); each output is checked once."""
    done, damaged = True, 0
    for image_id in rec["ids"]:
        r, out = man.records.get(image_id) or {}, dst_p / names[image_id]
        recorded = r.get("t") == "done" and r.get("out") == names[image_id]
        intact = recorded and check.intact(out, r)
        damaged += recorded and not intact and out.exists()
        done = done and intact and r.get("mix") == rec and not changed(image_id, r)
    return done, damaged


def mixed_todo(plan: MixPlan, names: dict, man, dst_p: Path, *, overwrite: bool, summary,
               changed: Callable[[str, dict], bool], check: OutputCheck,
               say: Callable[[str], None] | None = None) -> set[str]:
    """The ids of the groups this run must (re)do; counts finished groups (``check`` as for
    :func:`settle_groups`)."""
    todo: set[str] = set()
    damaged = 0
    summary.already += sum(len(g["ids"]) for g in plan.kept)
    for rec in plan.groups:
        done, bad = (False, 0) if overwrite else _group_state(rec, names, man, dst_p, changed, check)
        if done:
            summary.already += len(rec["ids"])
            continue
        todo.update(rec["ids"])
        damaged += bad
    if damaged and say is not None:
        say(damaged_note(damaged, "their groups are done again"))
    return todo


def run_mixed(plan: MixPlan, todo: set[str], names: dict, out_formats: dict, *, src_p: Path,
              key, options, batch_size: int, workers: int, dask, record: Callable[[list, dict], int],
              bar) -> None:
    """The chunk loop of a mixed run: read in the driver, mix anywhere, ``record`` in the driver."""
    opts = options.as_dict()
    sigs: dict[str, Any] = {}

    def jobs() -> Iterator[tuple[None, tuple]]:
        for chunk in pack_chunks(plan.groups, batch_size):
            if not any(i in todo for rec in chunk for i in rec["ids"]):
                continue
            items = []
            for rec in chunk:
                for i in rec["ids"]:
                    data, why, sig = read_source(src_p / i)
                    sigs[i] = sig
                    items.append((i, out_formats[i], data, why))
            yield None, (items, chunk)

    for _tag, results in map_unordered(mix_chunk, jobs(), workers=workers, dask=dask,
                                       shared=(key, opts)):
        bar.update(record(results, sigs))


def restore_mixed_jobs(man, todo: list[dict], read: Callable[[dict], tuple], batch_size: int,
                       summary) -> Iterator[tuple[None, tuple]]:
    """Restore jobs of a mixed run: every group with a member in ``todo``, all its members read
    (also those already restored: their outputs hold the others' regions). A group with a member
    that was never finished cannot be restored: its members are reported failed."""
    wanted: dict[tuple, dict] = {}
    for rec in todo:
        wanted.setdefault(tuple(rec["mix"]["ids"]), rec["mix"])
    ready = []
    for ids, grec in wanted.items():
        missing = [i for i in ids if (man.records.get(i) or {}).get("t") != "done"
                   or man.records[i].get("mix") != grec]
        if missing:
            for i in ids:
                if i not in missing:
                    summary.failed += 1
                    summary.problems.append((i, "failed", f"{missing[0]} of its mixing group of "
                                             f"{len(ids)} was never finished, and the group restores "
                                             "only whole: resume obfuscate, then restore again"))
            continue
        ready.append(grec)
    for chunk in pack_chunks(ready, batch_size):
        yield None, ([read(man.records[i]) for grec in chunk for i in grec["ids"]], chunk)

