"""Render audit results as a self-contained ``index.html`` (+ ``results.json`` and PNG copies).

Every picture is embedded as a base64 PNG (the page opens without its folder); the same PNGs are
also written to ``DIR/img/`` and linked, for reuse in documents.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np
import torch

from visualmixer.core.imageops import to_uint8_hwc
from visualmixer.eval.report.files import write_report
from visualmixer.eval.report.verdict import NOISE_RULE, STATUS_TEXT, method_judgement, verdict_method, verdict_sentence
from visualmixer.eval.userdata import USER_DATA_PREFIXES

__all__ = ["GRID_CELL", "GRID_PAD", "REPORT_CSS", "grid_column_titles", "image_grid", "image_stem", "page_start",
           "png_bytes",
           "png_data_uri", "privacy_utility_plot", "render_report", "report_image", "status_class"]

_COLS = ("original", "protected", "A2", "A3", "A5", "A5-colour", "A7", "A7+A5")
_COL_TITLES = {
    "original": "original",
    "protected": "protected (A1)",
    "A2": "A2 mosaic",
    "A3": "A3 inversion",
    "A5": "A5 jigsaw",
    "A5-colour": "A5 + channel order",
    "A7": "A7 layout + mosaic",
    "A7+A5": "A7 layout + A5",
    "A10 target": "the original A10 followed",
    "A10": "A10 intersection",
}


def grid_column_titles(names) -> list[str]:
    """The column titles of an :func:`image_grid` made of the views ``names``, in its order."""
    names = list(names)
    cols = [k for k in _COLS if k in names] + [k for k in names if k not in _COLS]
    return [_COL_TITLES.get(k, k) for k in cols]


#: Cell side and padding (px) of the audit's picture grids (:func:`image_grid`'s defaults).
GRID_CELL, GRID_PAD = 96, 2


def image_grid(columns: dict[str, torch.Tensor], cell: int = GRID_CELL, pad: int = GRID_PAD) -> np.ndarray:
    """Rows = images, columns = views; nearest-neighbour upscaled to ``cell`` px. Returns uint8 HWC."""
    from PIL import Image

    cols = [k for k in _COLS if k in columns] + [k for k in columns if k not in _COLS]
    n = min(int(columns[k].shape[0]) for k in cols)
    canvas = np.full((n * (cell + pad) + pad, len(cols) * (cell + pad) + pad, 3), 255, dtype=np.uint8)
    for j, k in enumerate(cols):
        for i in range(n):
            arr = to_uint8_hwc(columns[k][i])
            h, w = arr.shape[:2]
            s = cell / max(h, w)
            im = Image.fromarray(arr).resize(
                (max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.NEAREST
            )
            a = np.asarray(im)
            y0, x0 = pad + i * (cell + pad), pad + j * (cell + pad)
            canvas[y0 : y0 + a.shape[0], x0 : x0 + a.shape[1]] = a
    return canvas


def png_bytes(arr: np.ndarray) -> bytes:
    """PNG bytes of a uint8 ``(H, W, 3)`` or ``(H, W)`` array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _fmt(v, nd=3, pct=False):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if pct:
        return f"{100 * v:.1f}\u00a0%"  # no break between the number and its unit
    return f"{v:.{nd}f}"


def _figure_png(fig) -> bytes:
    """PNG bytes of a finished matplotlib figure (closed afterwards)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def privacy_utility_plot(ds_name: str, ds_res: dict) -> bytes:
    """PNG bytes: accuracy loss (x) vs best-attack SSIM and re-identification (y), one point per method."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    prior = ds_res["prior"]["class_mean"]["ssim"]["mean"]
    glob = ds_res["prior"]["global_mean"]["ssim"]["mean"]
    for spec, r in ds_res["methods"].items():
        s = r.get("summary", {})
        x = r.get("accuracy_loss_pp")
        if x is None:
            continue
        colour = "C3" if r["kind"] == "visualmixer" else "C0" if r["kind"] != "clean" else "k"
        for ax, y in zip(axes, (s.get("best_ssim"), s.get("best_reid")), strict=True):
            if y is None:
                continue
            ax.scatter([x], [y], color=colour, s=30)
            ax.annotate(spec, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes[0].axhline(prior, color="C2", ls="--", lw=1, label=f"prior: class mean ({prior:.2f})")
    axes[0].axhline(glob, color="C2", ls=":", lw=1, label=f"prior: global mean ({glob:.2f})")
    axes[0].set_ylabel("best attack SSIM (mean over victims)")
    axes[1].axhline(ds_res["reid_chance"], color="C2", ls="--", lw=1, label="chance")
    axes[1].set_ylabel("best attack re-identification rate")
    for ax in axes:
        ax.set_xlabel("accuracy loss (percentage points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{ds_name}: privacy vs utility (lower-left is better; red = VisualMixer)", fontsize=10)
    return _figure_png(fig)


def a3_curves_plot(ds_name: str, ds_res: dict) -> bytes | None:
    """PNG bytes: A3's training (solid) and validation (dashed) loss per epoch for every method,
    or None when no method recorded a curve."""
    curves = {s: r for s, r in ds_res["methods"].items() if r.get("a3_train_loss")}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    for i, (spec, r) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        tr, va = r["a3_train_loss"], r.get("a3_val_loss") or []
        ax.plot(range(1, len(tr) + 1), tr, color=colour, lw=1.2, label=spec)
        if va:
            ax.plot(range(1, len(va) + 1), va, color=colour, lw=1.2, ls="--")
        if r.get("a3_best_epoch") is not None and va:
            ax.scatter([r["a3_best_epoch"] + 1], [va[r["a3_best_epoch"]]], color=colour, s=18)
    ax.set_xlabel("epoch")
    ax.set_ylabel("L1 loss (train solid, validation dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(f"{ds_name}: A3 learned inversion, training curves (dot = epoch kept)", fontsize=9)
    return _figure_png(fig)


#: The reports' style sheet (the audit page and the ``visualmixer run`` page).
REPORT_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}
td.l,th.l{text-align:left}
.ok{background:#e5f5e0}.bad{background:#fde0dd}.noisy{background:#ececec;color:#444}
.prior{background:#f7f7f7;font-style:italic}
img{max-width:100%}
.note{color:#555;font-size:13px}
.verdict{border-left:5px solid #4a6fa5;background:#f2f6fb;padding:.7em 1em;margin:1em 0;font-size:15px;line-height:1.45}
.legend span{display:inline-block;padding:1px 8px;margin-right:6px;border:1px solid #ccc;font-size:12px}
table.pics td{text-align:center;vertical-align:top;border:none;padding:4px}
table.pics th{background:none;border:none;font-size:14px;text-align:center}
.gridhead{display:flex;padding-left:2px;margin-top:.6em}
.gridhead span{flex:none;font-size:11px;text-align:center;color:#333;overflow:hidden}
.gridhead+p{margin-top:2px}
table.pics th.l{text-align:right;vertical-align:middle;padding-right:10px}
table.pics img{width:168px;height:auto;image-rendering:pixelated;border:1px solid #ddd;display:block}
.cap{font-size:13px;color:#333;margin-top:2px}
"""
_CSS = REPORT_CSS


def page_start(title: str) -> str:
    """The head of a report page (charset, title, :data:`REPORT_CSS`) and its ``<h1>``."""
    t = html.escape(title)
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{t}</title>"
            f"<style>{REPORT_CSS}</style></head><body><h1>{t}</h1>")


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes (pages open without their folder)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_stem(name: str) -> str:
    """The file-name part the audit page gives a picture called ``name`` (``img/NNN-<stem>.png``)."""
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def report_image(out_dir, name: str) -> Path | None:
    """The PNG an audit page in ``out_dir`` wrote for the picture called ``name``, or None."""
    found = sorted(Path(out_dir, "img").glob(f"[0-9][0-9][0-9]-{image_stem(name)}.png"))
    return found[0] if found else None


def status_class(status: str | None) -> str:
    """CSS class of a goal status (:func:`visualmixer.eval.report.verdict.judge`)."""
    return {"met": "ok", "missed": "bad", "noisy": "noisy"}.get(status, "")


class _Page:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.parts: list[str] = []
        self.n_img = 0
        self.files: dict[str, bytes] = {}  # written with the page, at the end

    def add(self, s: str) -> None:
        self.parts.append(s)

    def image(self, png: bytes, alt: str, name: str) -> None:
        self.n_img += 1
        fname = f"img/{self.n_img:03d}-{image_stem(name)}.png"
        self.files[fname] = png
        self.add(
            f'<p><a href="{html.escape(fname)}"><img alt="{html.escape(alt)}" '
            f'src="{png_data_uri(png)}"></a></p>'
        )


def _judged(j: dict, key: str) -> str:
    """The class and tooltip attributes of a goal cell: status and noise band (:func:`method_judgement`)."""
    e = j.get(key)
    if not e:
        return ""
    return f"class='{status_class(e['status'])}' title='{STATUS_TEXT[e['status']]}: noise ± {e['band']:.3g}'"


def _summary_table(page: _Page, d: dict, agg: dict) -> None:
    """Best attack per score for every method; goal cells coloured only beyond the run's noise."""
    prior = d["prior"]
    page.add("<h3>Summary (best attack per score)</h3><p class='legend note'><span class='ok'>goal met beyond "
             "the noise</span><span class='bad'>goal missed beyond the noise</span><span class='noisy'>inside "
             "the noise: too small a run to judge</span> ± = the noise band (see the noise rule above).</p><table><tr>")
    page.add(
        "<th class='l'>method</th><th>accuracy</th><th>loss (pp)</th><th>VFE (receiver)</th>"
        "<th>VFE achieved</th><th>best SSIM</th><th>by</th><th>prior SSIM</th><th>Δ vs prior</th>"
        "<th>re-id</th><th>× chance</th><th>A4 best</th>"
        "<th title='A8: an attacker who holds the files links each released image to one'>A8 link</th>"
        "<th title='A8, the other way round: for each file, a released image that holds a piece of it'>A8 victim "
        "link</th><th title='A8: members vs never-released files, 0.5 = chance'>A8 membership AUC</th></tr>"
    )
    for spec, r in d["methods"].items():
        s = r.get("summary", {})
        j = method_judgement(d, spec, agg.get(spec)) if "summary" in r else {}
        acc_j = j.get("accuracy") or {}
        loss_txt = _fmt(r.get("accuracy_loss_pp"), 2)
        if r.get("kind") == "clean":
            loss_txt = "reference"
        elif r.get("accuracy_loss_pp") is not None and acc_j.get("band"):
            loss_txt += f"&nbsp;±&nbsp;{acc_j['band']:.1f}"

        vfe_r = (r.get("receiver_vfe") or {}).get("mean")
        vfe_a = (r.get("achieved_vfe") or {}).get("mean")
        eps = f" (ε={r['epsilon']:.2g})" if r.get("epsilon") is not None else ""
        if r.get("error"):
            eps += f"<br><small>error: {html.escape(r['error'][:200])}</small>"
        page.add(
            f"<tr><td class='l'>{html.escape(spec)}{eps}</td><td>{_fmt(r.get('accuracy'), pct=True)}</td>"
            f"<td {'' if r.get('kind') == 'clean' else _judged(j, 'accuracy')}>{loss_txt}</td>"
            f"<td>{_fmt(vfe_r)}</td><td>{_fmt(vfe_a)}</td>"
            f"<td>{_fmt(s.get('best_ssim'))}</td><td>{s.get('best_ssim_attack') or '–'}</td>"
            f"<td>{_fmt(prior['class_mean']['ssim']['mean'])}</td>"
            f"<td {_judged(j, 'ssim')}>{_fmt(s.get('ssim_over_prior'))}</td>"
            f"<td>{_fmt(s.get('best_reid'), pct=True)}</td>"
            f"<td {_judged(j, 'reid')}>{_fmt(s.get('reid_over_chance'), 1)}</td>"
            f"<td {_judged(j, 'a4')}>{_fmt(s.get('best_a4'), pct=True)}</td>"
            f"<td>{_fmt(s.get('link_rate'), pct=True)}</td><td>{_fmt(s.get('victim_link_rate'), pct=True)}</td>"
            f"<td>{_fmt(s.get('membership_auc'))}</td></tr>"
        )
    page.add("</table>")


def _any_source_table(page: _Page, d: dict) -> None:
    """Mixed releases also scored against the closest of each collage's sources (and the
    class-mean prior scored alike); nothing for data sets without mixing."""
    rows = [(spec, r) for spec, r in d["methods"].items()
            if (r.get("summary") or {}).get("best_reid_any_source") is not None]
    if not rows:
        return
    page.add("<p class='note'>Mixed releases, scored against <em>any</em> of a collage's sources (the "
             "one each estimate is closest to; the class mean scored alike):</p><table><tr><th>method</th>"
             "<th>best SSIM</th><th>prior SSIM</th><th>best SSIM − prior</th><th>best re-id</th>"
             "<th>prior re-id</th></tr>")
    for spec, r in rows:
        s, pa = r["summary"], r.get("prior_any_source") or {}
        page.add(f"<tr><td class='l'>{html.escape(spec)}</td><td>{_fmt(s.get('best_ssim_any_source'))}</td>"
                 f"<td>{_fmt((pa.get('ssim') or {}).get('mean'))}</td>"
                 f"<td>{_fmt(s.get('ssim_any_source_over_prior'))}</td>"
                 f"<td>{_fmt(s.get('best_reid_any_source'), pct=True)}</td>"
                 f"<td>{_fmt(pa.get('reid'), pct=True)}</td></tr>")
    page.add("</table>")


def _ds_tables(page: _Page, ds: str, d: dict, agg: dict | None = None) -> None:
    prior = d["prior"]
    # A2 before A10: by the number's length, then by name
    atk_names = sorted({a for r in d["methods"].values() for a in r.get("attacks", {})},
                       key=lambda a: (len(a.split("-")[0]), a))
    page.add(
        f"<p class='note'>{d['n_train']} training images, {d['n_victims']} victims (re-identification "
        f"chance {_fmt(d['reid_chance'] * 100, 2)} %), {d['n_attacker']} attacker images; "
        f"{d['shape'][1]}×{d['shape'][2]}×{d['shape'][0]}, region {d['region']} px; "
        f"accuracy chance {_fmt(d['chance_accuracy'], pct=True)}; utility model: "
        f"{html.escape(str(d.get('utility_model', 'audit CNN')))}.</p>"
    )
    _summary_table(page, d, agg or {})
    _any_source_table(page, d)
    # per-attack table
    page.add("<h3>Every attack: SSIM mean / max, PSNR mean, re-identification</h3><table><tr><th class='l'>method</th>")
    for a in atk_names:
        page.add(f"<th>{a} SSIM</th><th>{a} max</th><th>{a} PSNR</th><th>{a} re-id</th>")
    page.add("<th>A4 on protected</th><th>A4 on A2</th><th>A4 on A3</th></tr>")
    for name, label in (("class_mean", "prior: class mean image"), ("global_mean", "prior: global mean image")):
        p = prior[name]
        page.add(f"<tr class='prior'><td class='l'>{label}</td>")
        for _ in atk_names:
            page.add(
                f"<td>{_fmt(p['ssim']['mean'])}</td><td>{_fmt(p['ssim']['max'])}</td>"
                f"<td>{_fmt(p['psnr']['mean'], 1)}</td><td>{_fmt(p.get('reid', {}).get('rate'), pct=True)}</td>"
            )
        page.add("<td>–</td><td>–</td><td>–</td></tr>")
    for spec, r in d["methods"].items():
        page.add(f"<tr><td class='l'>{html.escape(spec)}</td>")
        for a in atk_names:
            sc = r.get("attacks", {}).get(a)
            if not sc:
                page.add("<td>–</td>" * 4)
                continue
            page.add(
                f"<td>{_fmt(sc['ssim']['mean'])}</td><td>{_fmt(sc['ssim']['max'])}</td>"
                f"<td>{_fmt(sc['psnr']['mean'], 1)}</td><td>{_fmt(sc.get('reid', {}).get('rate'), pct=True)}</td>"
            )
        a4 = r.get("A4") or {}
        page.add(
            f"<td>{_fmt(a4.get('protected'), pct=True)}</td><td>{_fmt(a4.get('A2'), pct=True)}</td>"
            f"<td>{_fmt(a4.get('A3'), pct=True)}</td></tr>"
        )
    page.add("</table>")


def _pm(st, pct=False, nd=3):
    if not isinstance(st, dict) or st.get("mean") is None:
        return "–"
    if pct:
        return f"{100 * st['mean']:.1f} ± {100 * (st.get('sd') or 0):.1f} %"
    return f"{st['mean']:.{nd}f} ± {(st.get('sd') or 0):.{nd}f}"


def _aggregate_table(page: _Page, agg: dict, seeds: list, d: dict) -> None:
    """Mean ± sd over seeds of the summary numbers (+ the ``visualmixer train`` accuracy)."""
    atks = list(dict.fromkeys(a for m in agg.values() for a in m.get("ssim", {})))
    has_train = any(r.get("train_utility") for r in d["methods"].values())
    page.add(
        f"<h3>Over {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± sd</h3>"
        "<p class='note'>The tables above and the images are those of the first seed.</p><table><tr>"
        "<th class='l'>method</th><th>accuracy</th><th>loss (pp, paired)</th><th>VFE</th>"
        + "".join(f"<th>{html.escape(a)} SSIM</th>" for a in atks)
        + "<th>best SSIM − prior</th><th>best re-id</th><th>A4 best</th>"
        + ("<th>train acc. (loss pp)</th>" if has_train else "")
        + "</tr>"
    )
    for spec, a in agg.items():
        cells = [
            _pm(a.get("accuracy"), pct=True),
            _pm(a.get("accuracy_loss_pp"), nd=2),
            _pm(a.get("vfe")),
            *[_pm(a.get("ssim", {}).get(x)) for x in atks],
            _pm(a.get("ssim_over_prior")),
            _pm(a.get("best_reid"), pct=True),
            _pm(a.get("best_a4"), pct=True),
        ]
        if has_train:
            tu = (d["methods"].get(spec) or {}).get("train_utility")
            cells.append(
                "–"
                if not tu
                else f"{_pm(tu.get('accuracy'), pct=True)} ({_pm(tu.get('loss_pp'), nd=2)})"
            )
        page.add(f"<tr><td class='l'>{html.escape(spec)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    page.add("</table>")


def _intro(page: _Page, results: dict) -> None:
    """The verdict sentence, the noise rule, the attacks and goals, the attacker's strength, notes."""
    if verdict_method(results) is not None:
        page.add(f"<p class='verdict'>{html.escape(verdict_sentence(results))}</p>")
    page.add(f"<p class='note'>{html.escape(NOISE_RULE)}</p>")
    page.add(
        "<p class='note'>Attacks: A1 direct view, A2 region mosaic, A3 learned inversion "
        "(U-Net trained on the attacker's own protected/original pairs, own keys), A4 clean-trained "
        "classifier, A5 channel re-alignment + greedy jigsaw (+ channel order), A6 face detection, A7 "
        "key-wide block layout recovered from the whole released set, A8 linkage / membership (an attacker who "
        "already holds the files finds them in the release: permutations keep each image's and each region's "
        "values). Scores compare each "
        "estimate with the victim's original; every SSIM stands beside the prior-only guess (the mean "
        "attacker image of the victim's class — labels leak by construction — and the global mean "
        "image), which needs no per-image information. Re-identification: the estimate's nearest "
        "original (normalised cross-correlation) among all victims. Goals: best SSIM ≤ prior "
        f"+ {results['goals']['ssim_over_prior']}, re-id ≤ {results['goals']['reid_over_chance']}× chance, "
        f"A4 ≤ chance + {int(100 * results['goals']['a4_over_chance'])} points, faces ≤ "
        f"{int(100 * results['goals']['face_rate'])} %, accuracy loss ≤ {results['goals']['acc_loss_pp']} pp. "
        f"Total time {results.get('seconds', 0)} s. Raw numbers: <a href='results.json'>results.json</a>.</p>"
    )
    strength = (results.get("config") or {}).get("attacker_strength")
    if strength == "weak attacker":
        page.add("<p class='note'><b>Weak attacker</b> (quick preset): a small A3 U-Net trained briefly on few "
                 "of the attacker's own images. A determined attacker reconstructs more; the FULL preset "
                 "(<code>visualmixer audit --full</code>) measures one at full strength.</p>")
    elif strength:
        page.add(f"<p class='note'>Attacker: <b>{html.escape(strength)}</b> for this preset's budget (A3 curves "
                 "below).</p>")
    for note in results.get("notes", []):
        page.add(f"<p class='note'>Note: {html.escape(note)}</p>")


def render_report(results: dict, pictures: dict, out_dir, *, title: str = "VisualMixer privacy audit") -> Path:
    """Write ``out_dir/index.html``, ``out_dir/results.json`` and ``out_dir/img/*.png``, each
    atomically and the page last (:func:`~visualmixer.eval.report.files.write_report`; pictures of
    an earlier report that this one does not show are removed).

    Returns
    -------
    pathlib.Path
        The path of ``index.html``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = json.dumps(results, indent=1, allow_nan=False)  # (before drawing: fails on NaN at once)
    page = _Page(out_dir)
    page.add(page_start(title))
    _intro(page, results)
    if any(ds.startswith(USER_DATA_PREFIXES) for ds in results["datasets"]):  # the owner's own images
        page.add("<p class='note'><b>Private:</b> this report shows original images of your data (and the names of "
                 "files it could not read): keep it as private as the images themselves.</p>")
    for ds, d in results["datasets"].items():
        page.add(f"<h2>{html.escape(ds)}</h2>")
        page.image(privacy_utility_plot(ds, d), f"{ds} privacy-utility plot", f"{ds}-plot")
        _ds_tables(page, ds, d, (results.get("aggregate") or {}).get(ds))
        curves = a3_curves_plot(ds, d)
        if curves is not None:
            page.image(curves, f"{ds} A3 training curves", f"{ds}-a3-curves")
        agg = (results.get("aggregate") or {}).get(ds)
        seeds = results.get("seeds") or []
        if agg and (len(seeds) > 1 or any(r.get("train_utility") for r in d["methods"].values())):
            _aggregate_table(page, agg, seeds, d)
        page.add(
            "<h3>Victims and reconstructions</h3><p class='note'>Columns: "
            + ", ".join(_COL_TITLES[c] for c in _COLS)
            + ".</p>"
        )
        for spec, cols in pictures.get(ds, {}).items():
            page.add(f"<h4>{html.escape(spec)}</h4>")
            if any(k not in _COLS for k in cols):  # columns beyond the common ones: name them all
                page.add("<p class='note'>Columns: " + ", ".join(map(html.escape, grid_column_titles(cols))) + ".</p>")
            page.image(png_bytes(image_grid(cols)), f"{ds} {spec}", f"{ds}-{spec}")
    if "faces" in results:
        f = results["faces"]
        page.add(f"<h2>A6 face detection ({f['n_images']} face photos, 128×128)</h2>")
        page.add("<table><tr><th class='l'>method</th>")
        dets = sorted({d for m in f["methods"].values() for d in m if d != "error"})
        views = ("A1", "A2", "A5")
        for det in dets:
            for v in views:
                page.add(f"<th>{det} on {v}</th>")
        page.add("</tr>")
        for spec, m in f["methods"].items():
            page.add(f"<tr><td class='l'>{html.escape(spec)}</td>")
            for det in dets:
                for v in views:
                    val = (m.get(det) or {}).get(v) if isinstance(m.get(det), dict) else None
                    ok = ""
                    if val is not None and spec != "clean":
                        ok = " class='ok'" if val <= results["goals"]["face_rate"] else " class='bad'"
                    page.add(f"<td{ok}>{_fmt(val, pct=True)}</td>")
            page.add("</tr>")
        page.add("</table><p class='note'>Columns of the grids: original, protected, A2, A5.</p>")
        for spec, cols in pictures.get("faces", {}).items():
            page.add(f"<h4>{html.escape(spec)}</h4>")
            page.image(png_bytes(image_grid(cols, cell=128)), f"faces {spec}", f"faces-{spec}")
    page.add("</body></html>")
    return write_report(out_dir, {**page.files, "results.json": data, "index.html": "\n".join(page.parts)},
                        "index.html", pictures="img")
