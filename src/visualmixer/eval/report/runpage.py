"""The photo part of ``visualmixer run`` and its page: obfuscate the built-in photos at several VFE
targets, draw the picture grid, and write the run's ``index.html`` linking every part.

>>> from visualmixer.eval.report.runpage import photo_demo, write_run_page    # doctest: +SKIP
>>> result = photo_demo("out/run", targets=(0.3, 0.5, 0.7))                    # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from visualmixer.core.keys import Key
from visualmixer.core.mixer import obfuscate, restore
from visualmixer.core.optional import require
from visualmixer.core.vfe import vfe
from visualmixer.data.samples import builtin_photos

__all__ = ["RunSection", "photo_demo", "photo_table", "save_photo_grid", "write_run_page"]


def photo_demo(out_dir: str | os.PathLike, targets: Sequence[float], *, size: int = 224,
               key: Key | None = None) -> dict:
    """Obfuscate the built-in photos at each target, check restore, write ``grid.png`` and ``photos.json``.

    Parameters
    ----------
    out_dir : path-like
        Existing folder for ``grid.png`` (the picture grid) and ``photos.json`` (the result).
    targets : sequence of float
        VFE targets in [0, 1].
    size : int, default 224
        Side of the square photo crops: images ``(N, 3, size, size)``.
    key : Key, optional
        Default: a fresh key, never stored (the run only demonstrates).

    Returns
    -------
    dict
        ``images`` (per photo: original VFE, achieved VFE per target, shuffle-level counts),
        ``targets``, ``restore_bit_exact``, ``size``, ``seconds_per_target``, ``note``.
    """
    for t in targets:
        if not 0 <= t <= 1:
            raise ValueError(f"targets must be in [0, 1], got {t}")
    out_dir = Path(out_dir)
    names, x = builtin_photos(size)
    key = key if key is not None else Key.generate()
    ids = [f"builtin/{n}" for n in names]
    original = vfe(x)
    rows = {n: {"original": round(float(v), 3)} for n, v in zip(names, original, strict=True)}
    outputs, exact, timings = [], True, {}
    for t in targets:
        t0 = time.perf_counter()
        res = obfuscate(x, key=key, ids=ids, target_vfe=t)
        timings[str(t)] = time.perf_counter() - t0
        exact &= bool(torch.equal(restore(res.images, res.plans, key=key, ids=ids), x))
        outputs.append(res.images)
        for n, v, lv in zip(names, res.vfe.tolist(), res.plans.levels.flatten(1), strict=True):
            rows[n][str(t)] = round(v, 3)
            rows[n][f"levels@{t}"] = {int(k): int(c) for k, c in enumerate(lv.long().bincount()) if c}
    achieved = [[rows[n][str(t)] for t in targets] for n in names]
    save_photo_grid(out_dir / "grid.png", names, x, outputs, targets, original_vfe=original.tolist(),
                    achieved_vfe=achieved)
    result = {
        "images": rows,
        "targets": list(targets),
        "restore_bit_exact": exact,
        "size": size,
        "seconds_per_target": {k: round(v, 3) for k, v in timings.items()},
        "note": "VFE per image (docs/method.md); targets are met when every value >= its target",
    }
    (out_dir / "photos.json").write_text(json.dumps(result, indent=2))
    return result


def save_photo_grid(path: str | os.PathLike, names: Sequence[str], originals: torch.Tensor,
                    outputs: Sequence[torch.Tensor], targets: Sequence[float], *,
                    original_vfe: Sequence[float], achieved_vfe: Sequence[Sequence[float]],
                    dpi: int = 80) -> Path:
    """Write a PNG grid: one row per photo, the original then one column per target.

    Parameters
    ----------
    path : path-like
        The PNG to write.
    names : sequence of str
        One per row.
    originals : torch.Tensor
        uint8 ``(N, C, H, W)``.
    outputs : sequence of torch.Tensor
        One uint8 ``(N, C, H, W)`` batch per target.
    targets : sequence of float
    original_vfe : sequence of float
        ``(N,)``: VFE of each original.
    achieved_vfe : sequence of sequences of float
        ``(N, len(targets))``: achieved VFE of each photo at each target.
    dpi : int, default 80

    Returns
    -------
    pathlib.Path
    """
    require("matplotlib", extra="eval", purpose="the photo grid")
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    cols = 1 + len(outputs)
    fig = Figure(figsize=(2.2 * cols, 2.4 * len(names)))
    axes = fig.subplots(len(names), cols, squeeze=False)
    for i, name in enumerate(names):
        panels = [originals[i]] + [o[i] for o in outputs]
        titles = [f"{name}\noriginal, VFE {float(original_vfe[i]):.2f}"] + [
            f"target {t}\nVFE {float(v):.2f}" for t, v in zip(targets, achieved_vfe[i], strict=True)
        ]
        for ax, img, title in zip(axes[i], panels, titles, strict=True):
            hwc = img.permute(1, 2, 0).numpy()
            ax.imshow(hwc[..., 0] if hwc.shape[2] == 1 else hwc, cmap="gray", interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return Path(path)


def photo_table(rows: dict, targets: Sequence[float]) -> str:
    """Plain-text table: one line per photo, its original VFE and the VFE achieved at each target."""
    head = f"{'image':<12}{'original':>10}" + "".join(f"{'@' + str(t):>10}" for t in targets)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(f"{name:<12}{r['original']:>10.3f}" + "".join(f"{r[str(t)]:>10.3f}" for t in targets))
    return "\n".join(lines)


@dataclass(frozen=True)
class RunSection:
    """One part of the run page.

    Attributes
    ----------
    title : str
    image : str, optional
        A picture, relative to the page's folder (shown when the file exists).
    link : str, optional
        A file or page, relative to the page's folder.
    text : str, optional
        Preformatted text (a table).
    """

    title: str
    image: str | None = None
    link: str | None = None
    text: str | None = None


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "pre{background:#f6f6f6;padding:.8em;overflow-x:auto}img{max-width:100%}"
)


def write_run_page(path: str | os.PathLike, sections: Sequence[RunSection], *,
                   title: str = "VisualMixer — main run") -> Path:
    """Write a small self-contained HTML page with one heading per section.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style>", f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<pre>{html.escape(s.text)}</pre>")
        if s.image and (path.parent / s.image).exists():
            parts.append(f"<img src='{html.escape(s.image)}' alt='{html.escape(s.title)}'>")
        if s.link:
            parts.append(f"<p><a href='{html.escape(s.link)}'>{html.escape(s.link)}</a></p>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
