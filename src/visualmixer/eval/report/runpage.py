"""``visualmixer run``: the photo demo and its ONE page (``index.html``).

The photos obfuscated at several VFE targets, the clean-vs-obfuscated training, and the quick
privacy audit on one styled, self-contained page (pictures embedded; the audit page's style
sheet, :data:`visualmixer.eval.report.html.REPORT_CSS`), with the privacy verdict in one
sentence at the top (:func:`visualmixer.eval.report.verdict.verdict_sentence`). The sections are
built by :func:`photo_section`, :func:`training_section` and :func:`audit_section`
(:mod:`visualmixer.eval.report.runsections`) and written by :func:`write_run_page`.

>>> import tempfile
>>> from visualmixer.eval.report.runpage import photo_demo
>>> result = photo_demo(tempfile.mkdtemp(), targets=(0.3, 0.7), size=64)  # writes grid.png, photos/
>>> result["restore_bit_exact"], result["files"]["astronaut"]["0.7"]
(True, 'photos/astronaut-vfe0.7.png')
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

from visualmixer.core.imageops import to_uint8_hwc
from visualmixer.core.keys import Key
from visualmixer.core.mixer import obfuscate, restore
from visualmixer.core.optional import require
from visualmixer.core.vfe import vfe
from visualmixer.data.samples import builtin_photos
from visualmixer.eval.report.files import write_file
from visualmixer.eval.report.html import page_start, png_bytes, png_data_uri

__all__ = ["RunSection", "photo_demo", "photo_section", "photo_table", "save_photo_files", "save_photo_grid",
           "write_run_page"]


def photo_demo(out_dir: str | os.PathLike, targets: Sequence[float], *, size: int = 224,
               key: Key | None = None) -> dict:
    """Obfuscate the built-in photos at each target, check restore, write ``grid.png``, one PNG per
    photo and target under ``photos/`` and ``photos.json``.

    Parameters
    ----------
    out_dir : path-like
        Folder for ``grid.png`` (the picture grid) and ``photos.json`` (the result); created if missing.
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
        ``targets``, ``restore_bit_exact``, ``size``, ``seconds_per_target``, ``files`` (per photo:
        ``{"original" | str(target): PNG path relative to out_dir}``), ``note``.
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
    files = save_photo_files(out_dir / "photos", names, x, outputs, targets)
    save_photo_grid(out_dir / "grid.png", names, x, outputs, targets, original_vfe=original.tolist(),
                    achieved_vfe=achieved)
    result = {
        "images": rows,
        "targets": list(targets),
        "restore_bit_exact": exact,
        "size": size,
        "seconds_per_target": {k: round(v, 3) for k, v in timings.items()},
        "files": {n: {k: str(Path("photos") / f) for k, f in fs.items()} for n, fs in files.items()},
        "note": "VFE per image (docs/method.md); targets are met when every value >= its target",
    }
    write_file(out_dir / "photos.json", json.dumps(result, indent=2))
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


def save_photo_files(folder: str | os.PathLike, names: Sequence[str], originals: torch.Tensor,
                     outputs: Sequence[torch.Tensor], targets: Sequence[float]) -> dict:
    """One PNG per photo and view: ``NAME-original.png`` and ``NAME-vfeT.png`` per target.

    Parameters
    ----------
    folder : path-like
        Created when missing.
    names : sequence of str
    originals : torch.Tensor
        uint8 ``(N, C, H, W)``.
    outputs : sequence of torch.Tensor
        One uint8 ``(N, C, H, W)`` batch per target.
    targets : sequence of float

    Returns
    -------
    dict
        ``{name: {"original" | str(target): file name}}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict = {}
    for i, name in enumerate(names):
        views = {"original": originals[i], **{str(t): o[i] for t, o in zip(targets, outputs, strict=True)}}
        files[name] = {}
        for view, img in views.items():
            fname = f"{name}-{'original' if view == 'original' else 'vfe' + view}.png"
            write_file(folder / fname, png_bytes(to_uint8_hwc(img)))
            files[name][view] = fname
    return files


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
        Preformatted text.
    html : str, optional
        Ready markup (tables, embedded pictures) from the section builders; trusted, not escaped.
    """

    title: str
    image: str | None = None
    link: str | None = None
    text: str | None = None
    html: str | None = None


def write_run_page(path: str | os.PathLike, sections: Sequence[RunSection], *,
                   title: str = "VisualMixer — main run", verdict: str | None = None,
                   notes: Sequence[str] = ()) -> Path:
    """Write the run's page: the reports' style, the verdict at the top, one heading per section.

    Parameters
    ----------
    path : path-like
        The ``index.html`` to write (its folder holds the files sections link to).
    sections : sequence of RunSection
    title : str
    verdict : str, optional
        The privacy verdict (one sentence), shown at the top.
    notes : sequence of str
        Short notes under the verdict (escaped).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    parts = [page_start(title)]
    if verdict:
        parts.append(f"<p class='verdict' id='verdict'>{html.escape(verdict)}</p>")
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.html:
            parts.append(s.html)
        if s.text:
            parts.append(f"<pre>{html.escape(s.text)}</pre>")
        if s.image and (path.parent / s.image).exists():
            parts.append(f"<img src='{html.escape(s.image)}' alt='{html.escape(s.title)}'>")
        if s.link:
            parts.append(f"<p><a href='{html.escape(s.link)}'>{html.escape(s.link)}</a></p>")
    parts.append("</body></html>")
    return write_file(path, "\n".join(parts) + "\n")


def photo_section(out_dir: str | os.PathLike, photos: dict) -> RunSection:
    """The photos at each target: a picture table (original, then each target with its achieved
    VFE; pictures embedded from ``photos["files"]``) and the table of achieved VFE.

    ``photos`` is :func:`photo_demo`'s result (``out_dir`` is where it wrote).
    """
    out_dir = Path(out_dir)
    targets = [str(t) for t in photos["targets"]]
    head = "".join(f"<th>target {html.escape(t)}</th>" for t in targets)
    parts = ["<table class='pics'><tr><th></th><th>original</th>" + head + "</tr>"]
    for name, row in photos["images"].items():
        files = (photos.get("files") or {}).get(name, {})
        cells = []
        for view in ["original", *targets]:
            f = out_dir / files[view] if view in files else None
            img = (f"<img alt='{html.escape(name)} {html.escape(view)}' src='{png_data_uri(f.read_bytes())}'>"
                   if f is not None and f.exists() else "")
            cap = f"VFE {row[view]:.2f}" if view == "original" else f"achieved VFE {row[view]:.2f}"
            cells.append(f"<td>{img}<div class='cap'>{cap}</div></td>")
        parts.append(f"<tr><th class='l'>{html.escape(name)}</th>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    parts.append("<table><tr><th class='l'>photo</th><th>original VFE</th>"
                 + "".join(f"<th>achieved at target {html.escape(t)}</th>" for t in targets) + "</tr>")
    for name, row in photos["images"].items():
        cells = "".join(f"<td class='{'ok' if row[t] >= float(t) else 'bad'}'>{row[t]:.3f}</td>" for t in targets)
        parts.append(f"<tr><td class='l'>{html.escape(name)}</td><td>{row['original']:.3f}</td>{cells}</tr>")
    parts.append("</table>")
    exact = "yes, bit for bit" if photos["restore_bit_exact"] else "NO"
    secs = ", ".join(f"{t}: {v:.2f} s" for t, v in (photos.get("seconds_per_target") or {}).items())
    parts.append(
        f"<p class='note'>VFE (visual feature entropy, 0–1): higher = less recognisable; a target is met when "
        f"the achieved VFE is at least the target (green). {photos['size']}×{photos['size']} crops. Restored "
        f"exactly with the key: {exact}. Obfuscation time per target for all photos: {secs}. "
        "Files: <a href='photos.json'>photos.json</a>, <a href='grid.png'>grid.png</a>, <code>photos/</code>.</p>")
    return RunSection("Photos obfuscated at several VFE targets", html="\n".join(parts))
