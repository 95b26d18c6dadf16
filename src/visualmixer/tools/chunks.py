"""The per-chunk work of the folder tools, run in this process, worker processes or Dask workers.

A chunk is a fixed slice of the sorted id list: its images are decoded, same-size images are
obfuscated (or restored) in one batched call with one intra-op thread, and the outputs encoded.
The driver (:mod:`visualmixer.tools.folders`) reads the files and writes the results; the
functions here touch no file, so a fault on disk is always handled in one place.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from visualmixer.tools import imageio as vio

__all__ = ["decode_items", "obfuscate_chunk", "restore_chunk", "pixel_check", "pixels_match", "OneThread"]


def pixel_check(key: Any, image_id: str, pixels) -> str:
    mac = hmac.new(key.subkey(image_id, purpose="tools-pixel-check"), digestmod=hashlib.sha256)
    mac.update(repr(tuple(pixels.shape)).encode())
    mac.update(pixels.contiguous().numpy().tobytes())
    return mac.hexdigest()[:32]


def pixels_match(key: Any, image_id: str, pixels, recorded) -> bool:
    """Whether ``pixels`` are those the keyed checksum ``recorded`` (a manifest's ``check``) was
    made of, compared in constant time (:func:`hmac.compare_digest`); False for no checksum."""
    return isinstance(recorded, str) and hmac.compare_digest(pixel_check(key, image_id, pixels).encode(),
                                                             recorded.encode("utf-8", "surrogatepass"))


class OneThread:
    """Run torch with one intra-op thread (same float reduction order in every back end)."""

    def __enter__(self):
        import torch

        self._n = torch.get_num_threads()
        if self._n != 1:
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        import torch

        if self._n != 1:
            torch.set_num_threads(self._n)


def decode_items(items, max_pixels) -> tuple[dict[str, dict], dict[str, Any]]:
    """Decode ``(id, file bytes or None, reason)`` items: ``(failure records, decoded images)``."""
    results: dict[str, dict] = {}
    decoded: dict[str, Any] = {}
    for image_id, data, why in items:
        if data is None:
            results[image_id] = {"id": image_id, "t": "failed", "reason": why or "cannot read file"}
            continue
        try:
            loaded = vio.decode_image(data, max_pixels=max_pixels)
        except vio.ImageReadError as exc:
            status = "skipped" if "decompression-bomb" in str(exc) else "failed"
            results[image_id] = {"id": image_id, "t": status, "reason": str(exc)}
            continue
        decoded[image_id] = loaded
    return results, decoded


def obfuscate_chunk(items: list[tuple[str, str, bytes | None, str]], key: Any, opts: dict) -> list[dict]:
    """Decode, obfuscate (same-size images in one call), encode. Returns one dict per item.

    ``items`` are ``(image id, output format, file bytes or None, reason when None)``.
    """
    import torch

    from visualmixer.core.mixer import obfuscate

    out_formats = {image_id: fmt for image_id, fmt, _data, _why in items}
    results, decoded = decode_items([(i, d, w) for i, _f, d, w in items], opts["max_pixels"])
    groups: dict[tuple, list[str]] = {}
    for image_id, loaded in decoded.items():
        groups.setdefault(tuple(loaded.pixels.shape), []).append(image_id)
    with OneThread():
        for _shape, ids in groups.items():
            batch = torch.stack([decoded[i].pixels for i in ids])
            try:
                res = obfuscate(
                    batch, key=key, ids=list(ids), target_vfe=opts["target_vfe"],
                    region=opts["region"], channel_order=opts["channel_order"],
                )
            except Exception as exc:  # noqa: BLE001 - reported per file, the run goes on
                reason = f"obfuscation failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
                for i in ids:
                    results[i] = {"id": i, "t": "failed", "reason": reason}
                continue
            for n, image_id in enumerate(ids):
                loaded = decoded[image_id]
                out_fmt = out_formats[image_id]
                data = vio.encode_image(
                    res.images[n], out_fmt, compress_level=opts["compress_level"]
                )
                results[image_id] = {
                    "id": image_id,
                    "t": "done",
                    "vfe": round(float(res.vfe[n]), 6),
                    "plan": res.plans[n].to_dict(),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "check": pixel_check(key, image_id, loaded.pixels),
                    "shape": list(loaded.pixels.shape),
                    "src_format": loaded.format,
                    "src_mode": loaded.mode,
                    "conversions": loaded.conversions,
                    "out_format": out_fmt,
                    "data": data,
                }
    return [results[i] for i, _o, _d, _w in items]


def restore_chunk(items: list[tuple[str, dict, bytes | None, str]], key: Any, opts: dict) -> list[dict]:
    """Decode obfuscated outputs, restore them (same-size images in one call), encode PNG."""
    import torch

    from visualmixer.core.mixer import Plans, restore

    results: dict[str, dict] = {}
    decoded: dict[str, Any] = {}
    for image_id, rec, data, why in items:
        if data is None:
            results[image_id] = {"id": image_id, "t": "failed", "reason": why or f"{rec['out']} is missing"}
            continue
        if hashlib.sha256(data).hexdigest() != rec.get("sha256"):
            results[image_id] = {
                "id": image_id, "t": "failed",
                "reason": f"{rec['out']} changed since it was written (sha256 differs); cannot restore",
            }
            continue
        try:
            loaded = vio.decode_image(data, max_pixels=None)
        except vio.ImageReadError as exc:
            results[image_id] = {"id": image_id, "t": "failed", "reason": str(exc)}
            continue
        decoded[image_id] = loaded.pixels
    recs = {i: r for i, r, _d, _w in items}
    groups: dict[tuple, list[str]] = {}
    for image_id, px in decoded.items():
        groups.setdefault(tuple(px.shape), []).append(image_id)
    with OneThread():
        for _shape, ids in groups.items():
            batch = torch.stack([decoded[i] for i in ids])
            try:
                plans = Plans.cat([Plans.from_dict(recs[i]["plan"]) for i in ids])
                orig = restore(batch, plans, key=key, ids=list(ids))
            except Exception as exc:  # noqa: BLE001
                reason = f"restore failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
                for i in ids:
                    results[i] = {"id": i, "t": "failed", "reason": reason}
                continue
            for n, image_id in enumerate(ids):
                exact = pixels_match(key, image_id, orig[n], recs[image_id].get("check"))
                lossy = recs[image_id].get("out_format") == "jpeg"
                if not exact and not lossy:
                    results[image_id] = {
                        "id": image_id, "t": "failed",
                        "reason": "restored pixels do not match the original (wrong key or manifest?)",
                    }
                    continue
                results[image_id] = {
                    "id": image_id, "t": "done", "exact": exact,
                    "data": vio.encode_image(orig[n], "png", compress_level=opts["compress_level"]),
                }
    return [results[i] for i, _r, _d, _w in items]
