"""The per-chunk work of a mixed folder run (``mix=K``), run in this process, worker processes or
Dask workers; like :mod:`visualmixer.tools.chunks` these functions touch no file.

A mixed chunk is a fixed run of whole groups (:func:`visualmixer.core.mixing.make_groups`): the
regions of a group's images are exchanged among them (:func:`~visualmixer.core.mixing.mix_regions`),
so a group is only ever computed, written and restored whole. Groups of one shape share one
batched :func:`~visualmixer.core.mixing.mix_regions` and one :func:`visualmixer.obfuscate` call.

A group is described by its *group record* (kept in every member's manifest record)::

    {"ids": [member ids in slot order], **MixGroups(one group).to_dict()}

whose ``groups`` is ``[[0, 1, ..., m - 1]]`` (the members in ``ids`` order) and ``region`` the
region side of the exchange and of the in-region shuffle (``share``, when present, the share of
region positions exchanged; absent: every position; ``balanced``, when present, balanced assignment,
and ``design`` how it was dealt: ``"switched"``, or ``"cyclic"`` — also when absent from a version 3
record). Groups are unmixed in batches of records that agree on everything but their members.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from visualmixer.tools import imageio as vio
from visualmixer.tools.chunks import OneThread, decode_items, pixel_check, pixels_match

__all__ = ["group_record", "survey_chunk", "mix_chunk", "unmix_chunk"]


def group_record(ids: list[str], *, region: int, k: int, grouping: str, share: float = 1.0,
                 balanced: bool = False) -> dict:
    """The manifest's record of one group (see the module docstring; ``share`` only when not 1,
    ``balanced`` only when set)."""
    import torch

    from visualmixer.core.mixing import MixGroups

    one = MixGroups(torch.arange(len(ids)).view(1, -1), int(region), int(k), grouping, share=float(share),
                    balanced=bool(balanced))
    return {"ids": list(ids), **one.to_dict()}


def _batch_groups(records: list[dict]):
    """One :class:`MixGroups` over several same-shape group records, and the ids in its order."""
    import torch

    from visualmixer.core.mixing import MixGroups

    ids = [i for rec in records for i in rec["ids"]]
    width = max(len(rec["ids"]) for rec in records)
    members = torch.full((len(records), width), -1, dtype=torch.long)
    start = 0
    for g, rec in enumerate(records):  # bookkeeping of group records, not of pixels
        members[g, : len(rec["ids"])] = torch.arange(start, start + len(rec["ids"]))
        start += len(rec["ids"])
    first = MixGroups.from_dict({k: v for k, v in records[0].items() if k != "ids"})
    return replace(first, members=members), ids  # every recorded option of the first record, these members


def _region(opts: dict, shape) -> int:
    from visualmixer.core.regions import default_region

    return int(opts["region"]) if opts.get("region") else default_region(shape[1], shape[2])


def survey_chunk(items: list[tuple[str, bytes | None, str]], key: Any, opts: dict) -> list[dict]:
    """Decode each image once before grouping: its shape, and (``grouping="similar"``) its
    region-mean mosaic ``(C, ceil(H / region), ceil(W / region))`` float32 — what
    :func:`~visualmixer.core.mixing.make_groups` orders look-alike images by.
    Failures come back as the manifest's ``failed``/``skipped`` records.
    """
    import torch.nn.functional as F

    results, decoded = decode_items(items, opts["max_pixels"])
    for image_id, loaded in decoded.items():
        shape = tuple(loaded.pixels.shape)
        rec = {"id": image_id, "t": "ok", "shape": list(shape)}
        if opts.get("grouping") == "similar":
            x = loaded.pixels.unsqueeze(0).float()
            with OneThread():
                rec["mosaic"] = F.avg_pool2d(x, _region(opts, shape), ceil_mode=True)[0]
        results[image_id] = rec
    return [results[i] for i, _d, _w in items]


def _group_failures(groups: list[dict], results: dict, ok: set[str]) -> list[dict]:
    """Fail every member of a group that lost a member (or whose shapes differ); keep the rest."""
    whole = []
    for rec in groups:
        bad = [i for i in rec["ids"] if i not in ok]
        if not bad:
            whole.append(rec)
            continue
        reason = results[bad[0]]["reason"] if bad[0] in results else "not decoded"
        for i in rec["ids"]:
            if i in ok:
                results[i] = {"id": i, "t": "failed", "reason": f"{bad[0]} of its mixing group of "
                              f"{len(rec['ids'])} failed ({reason}), and a group is done only whole; "
                              "rerun to retry"}
    return whole


def _by_shape(groups: list[dict], shapes: dict[str, tuple]) -> dict[tuple, list[dict]]:
    buckets: dict[tuple, list[dict]] = {}
    for rec in groups:
        member_shapes = {shapes[i] for i in rec["ids"]}
        # every recorded option but the members (share, balanced, design, version...): one batch
        # is unmixed with one record's options
        options = tuple(sorted((k, json.dumps(v)) for k, v in rec.items() if k not in ("ids", "groups")))
        key = (member_shapes.pop() if len(member_shapes) == 1 else None, rec["region"], options)
        buckets.setdefault(key, []).append(rec)
    return buckets


def mix_chunk(items: list[tuple[str, str, bytes | None, str]], groups: list[dict], key: Any,
              opts: dict) -> list[dict]:
    """Decode, mix each group's regions, shuffle inside regions, encode (one dict per item).

    ``items`` are ``(image id, output format, file bytes or None, reason when None)`` for every
    member of ``groups`` (group records, see the module docstring).
    """
    import torch

    from visualmixer.core.mixer import obfuscate
    from visualmixer.core.mixing import mix_regions

    results, decoded = decode_items([(i, d, w) for i, _f, d, w in items], opts["max_pixels"])
    out_formats = {i: f for i, f, _d, _w in items}
    shapes = {i: tuple(loaded.pixels.shape) for i, loaded in decoded.items()}
    whole = _group_failures(groups, results, set(decoded))
    with OneThread():
        for (shape, region, _options), recs in _by_shape(whole, shapes).items():
            mg, ids = _batch_groups(recs)
            try:
                if shape is None:
                    raise ValueError("the images of a mixing group differ in size")
                batch = torch.stack([decoded[i].pixels for i in ids])
                res = obfuscate(mix_regions(batch, mg, key=key, ids=ids), key=key, ids=ids,
                                target_vfe=opts["target_vfe"], region=region,
                                channel_order=opts["channel_order"])
            except Exception as exc:  # noqa: BLE001 - reported per file, the run goes on
                reason = f"mixing failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
                results.update({i: {"id": i, "t": "failed", "reason": reason} for i in ids})
                continue
            group_of = {i: rec for rec in recs for i in rec["ids"]}
            for n, image_id in enumerate(ids):
                loaded = decoded[image_id]
                data = vio.encode_image(res.images[n], out_formats[image_id],
                                        compress_level=opts["compress_level"])
                results[image_id] = {
                    "id": image_id, "t": "done", "vfe": round(float(res.vfe[n]), 6),
                    "plan": res.plans[n].to_dict(), "mix": group_of[image_id],
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "check": pixel_check(key, image_id, loaded.pixels),
                    "shape": list(loaded.pixels.shape), "src_format": loaded.format,
                    "src_mode": loaded.mode, "conversions": loaded.conversions,
                    "out_format": out_formats[image_id], "data": data,
                }
    return [results[i] for i, _f, _d, _w in items]


def _decode_outputs(items) -> tuple[dict[str, dict], dict[str, Any]]:
    results: dict[str, dict] = {}
    decoded: dict[str, Any] = {}
    for image_id, rec, data, why in items:
        if data is None:
            results[image_id] = {"id": image_id, "t": "failed", "reason": why or f"{rec['out']} is missing"}
        elif hashlib.sha256(data).hexdigest() != rec.get("sha256"):
            results[image_id] = {"id": image_id, "t": "failed", "reason":
                                 f"{rec['out']} changed since it was written (sha256 differs); cannot restore"}
        else:
            try:
                decoded[image_id] = vio.decode_image(data, max_pixels=None).pixels
            except vio.ImageReadError as exc:
                results[image_id] = {"id": image_id, "t": "failed", "reason": str(exc)}
    return results, decoded


def unmix_chunk(items: list[tuple[str, dict, bytes | None, str]], groups: list[dict], key: Any,
                opts: dict) -> list[dict]:
    """Restore whole groups: undo the in-region shuffle, then the exchange; check, encode PNG.

    A group with a missing or edited member cannot be restored (that member's collage holds
    regions of every other member): all its members fail, the reason naming the culprit.
    """
    import torch

    from visualmixer.core.mixer import Plans, restore
    from visualmixer.core.mixing import unmix_regions

    results, decoded = _decode_outputs(items)
    recs = {i: r for i, r, _d, _w in items}
    shapes = {i: tuple(px.shape) for i, px in decoded.items()}
    whole = _group_failures(groups, results, set(decoded))
    with OneThread():
        for (shape, _region, _options), grecs in _by_shape(whole, shapes).items():
            mg, ids = _batch_groups(grecs)
            try:
                if shape is None:
                    raise ValueError("the outputs of a mixing group differ in size")
                batch = torch.stack([decoded[i] for i in ids])
                plans = Plans.cat([Plans.from_dict(recs[i]["plan"]) for i in ids])
                orig = unmix_regions(restore(batch, plans, key=key, ids=ids), mg, key=key, ids=ids)
            except Exception as exc:  # noqa: BLE001
                reason = f"restore failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
                results.update({i: {"id": i, "t": "failed", "reason": reason} for i in ids})
                continue
            for n, image_id in enumerate(ids):
                if not pixels_match(key, image_id, orig[n], recs[image_id].get("check")):
                    results[image_id] = {"id": image_id, "t": "failed", "reason":
                                         "restored pixels do not match the original (wrong key or manifest?)"}
                    continue
                results[image_id] = {
                    "id": image_id, "t": "done", "exact": True,
                    "data": vio.encode_image(orig[n], "png", compress_level=opts["compress_level"]),
                }
    return [results[i] for i, _r, _d, _w in items]
