"""The training and audit sections of the ``visualmixer run`` page (:mod:`visualmixer.eval.report.runpage`).

:func:`training_section` renders :func:`visualmixer.train.quick_compare`'s result (clean vs
obfuscated test accuracy per epoch, the one-off obfuscation time apart); :func:`audit_section`
renders a quick audit's ``results.json`` (privacy–utility plot, a compact goal table judged
against the run's noise, the reconstructions of the audit page) and returns the one-sentence
verdict for the top of the page and the terminal.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from visualmixer.eval.report.html import (
    GRID_CELL,
    GRID_PAD,
    grid_column_titles,
    png_data_uri,
    privacy_utility_plot,
    report_image,
    status_class,
)
from visualmixer.eval.report.presets import GOALS
from visualmixer.eval.report.runner import NOT_PICTURED
from visualmixer.eval.report.runpage import RunSection
from visualmixer.eval.report.verdict import (
    NOISE_RULE,
    STATUS_TEXT,
    accuracy_band_pp,
    judge,
    method_judgement,
    verdict_method,
    verdict_sentence,
)

__all__ = ["audit_section", "noise_note", "training_section"]


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}\u00a0%"


def _cell(text: str, status: str | None) -> str:
    tip = "" if status is None else f" title='{STATUS_TEXT[status]}'"
    return f"<td class='{status_class(status)}'{tip}>{text}</td>" if status else f"<td>{text}</td>"


def training_section(out_dir: str | os.PathLike, summary: dict) -> RunSection:
    """Clean vs obfuscated test accuracy per epoch, the final loss with its noise band, and the
    one-off obfuscation time of the sets apart from the epoch times.

    Parameters
    ----------
    out_dir : path-like
        The run's folder; ``train/curves.png`` there is embedded when it exists.
    summary : dict
        :func:`visualmixer.train.quick_compare`'s result (``rows`` with ``epochs`` and
        ``setup_obfuscate_s``; ``n_train``, ``n_test``).
    """
    rows = summary["rows"]
    clean = next((r for r in rows if r["target_vfe"] is None), None)
    obf = [r for r in rows if r["target_vfe"] is not None]
    n_test = summary.get("n_test")
    cols = ([clean] if clean else []) + obf
    names = ["clean" if r["target_vfe"] is None else f"obfuscated, VFE {r['target_vfe']:g}" for r in cols]
    parts = ["<table><tr><th>epoch</th>" + "".join(f"<th>{html.escape(n)}: test accuracy</th>" for n in names)
             + "".join(f"<th>{html.escape(n)}: epoch time</th>" for n in names) + "</tr>"]
    n_ep = min((len(r.get("epochs") or []) for r in cols), default=0)
    for i in range(n_ep):
        eps = [r["epochs"][i] for r in cols]
        parts.append(f"<tr><td>{i + 1}</td>" + "".join(f"<td>{_pct(e['test_acc'])}</td>" for e in eps)
                     + "".join(f"<td>{e['epoch_s']:.1f} s</td>" for e in eps) + "</tr>")
    parts.append("</table>")
    if clean is not None and obf:
        parts.append("<table><tr><th class='l'>final</th><th>test accuracy</th><th>achieved VFE (train / test)</th>"
                     f"<th>accuracy loss (points, goal ≤ {GOALS['acc_loss_pp']:g})</th>"
                     "<th>one-off obfuscation of the sets</th></tr>")
        parts.append(f"<tr><td class='l'>clean</td><td>{_pct(clean['test_acc'])}</td>" + "<td>–</td>" * 3 + "</tr>")
        for r in obf:
            loss, band = r.get("loss_pp"), None
            if loss is not None and n_test:
                band = accuracy_band_pp(clean["test_acc"], r["test_acc"], int(n_test))
            status = judge(loss, band or 0.0, GOALS["acc_loss_pp"]) if band is not None else None
            loss_txt = "–" if loss is None else f"{loss:+.2f}" + ("" if band is None else f"&nbsp;±&nbsp;{band:.1f}")
            tv = "–" if r.get("train_vfe") is None else f"{r['train_vfe']:.3f}"
            te = "–" if r.get("test_vfe") is None else f"{r['test_vfe']:.3f}"
            setup = r.get("setup_obfuscate_s")
            parts.append(f"<tr><td class='l'>VFE {r['target_vfe']:g}</td><td>{_pct(r['test_acc'])}</td>"
                         f"<td>{tv} / {te}</td>" + _cell(loss_txt, status)
                         + f"<td>{'–' if setup is None else f'{setup:.1f} s'}</td></tr>")
        parts.append("</table>")
    parts.append(
        f"<p class='note'>The same small CNN trained clean and on obfuscated images "
        f"({summary.get('n_train', '?')} training / {n_test or '?'} test images, test images obfuscated to the "
        "same target, each with its own key). The one-off obfuscation of the training and test sets happens "
        "once before epoch 1 and is not in the epoch times. ± = twice the binomial standard error on the "
        "test images: a loss inside it is too small a run to judge.</p>")
    curves = Path(out_dir) / "train" / "curves.png"
    if curves.exists():
        parts.append(f"<p><img alt='training curves' src='{png_data_uri(curves.read_bytes())}'></p>")
    parts.append("<p class='note'>Files: <a href='train/accuracy.json'>train/accuracy.json</a>, "
                 "<a href='train/accuracy.md'>train/accuracy.md</a>.</p>")
    return RunSection("Training clean vs obfuscated (Fashion-MNIST)", html="\n".join(parts))


def noise_note(results: dict, dataset: str, spec: str) -> str:
    """How noisy the audit's numbers are (the bands of the verdict's method) and the noise rule."""
    d = results["datasets"][dataset]
    agg = ((results.get("aggregate") or {}).get(dataset) or {}).get(spec)
    j = method_judgement(d, spec, agg, results.get("goals"))
    seeds = results.get("seeds") or [None]
    return (
        f"How noisy these numbers are: {len(seeds)} seed{'s' if len(seeds) != 1 else ''} and {d['n_victims']} "
        f"victims measure the accuracy loss to ± {j['accuracy']['band']:.1f} points, the SSIM above the prior to "
        f"± {j['ssim']['band']:.3f} and re-identification to ± {j['reid']['band']:.1f}× chance. {NOISE_RULE}"
    )


def _goal_table(d: dict, agg: dict) -> str:
    """Compact table: every method's accuracy loss, best SSIM vs prior and re-identification,
    each judged against the noise (:func:`method_judgement`)."""
    prior = d["prior"]["class_mean"]["ssim"]["mean"]
    parts = ["<table><tr><th class='l'>method</th><th>accuracy</th><th>loss (points)</th><th>best SSIM (attack)</th>"
             "<th>SSIM − prior</th><th>re-identification</th><th>× chance</th></tr>"]
    for spec, r in d["methods"].items():
        if r.get("error") or "summary" not in r:
            parts.append(f"<tr><td class='l'>{html.escape(spec)}</td><td colspan='6'>failed: "
                         f"{html.escape(str(r.get('error', 'no result'))[:160])}</td></tr>")
            continue
        s, j = r["summary"], method_judgement(d, spec, agg.get(spec))
        reference = r.get("kind") == "clean"
        if reference:  # nothing to judge: the utility reference, released as it is
            j = {k: {**v, "status": None} for k, v in j.items()}

        def val(key, fmt, j=j):
            e = j[key]
            if e["value"] is None:
                return "–"
            return f"{format(e['value'], fmt)}&nbsp;±&nbsp;{e['band']:.{1 if key != 'ssim' else 3}f}"

        best = "–" if s.get("best_ssim") is None else f"{s['best_ssim']:.3f}"
        parts.append(
            f"<tr><td class='l'>{html.escape(spec)}</td><td>{_pct(r.get('accuracy'))}</td>"
            + ("<td>reference</td>" if reference else _cell(val("accuracy", "+.1f"), j["accuracy"]["status"]))
            + f"<td>{best} ({html.escape(s.get('best_ssim_attack') or '–')})</td>"
            + _cell(val("ssim", "+.3f"), j["ssim"]["status"])
            + f"<td>{_pct(s.get('best_reid'))}</td>" + _cell(val("reid", ".1f"), j["reid"]["status"]) + "</tr>")
    parts.append(f"</table><p class='note'>Prior-only guess (the mean attacker image of the victim's class): SSIM "
                 f"{prior:.3f}; re-identification chance {100 * d['reid_chance']:.1f} %. <span class='ok'>green</span> "
                 "goal met beyond the noise, <span class='bad'>red</span> missed beyond it, "
                 "<span class='noisy'>grey</span> inside the noise.</p>")
    return "\n".join(parts)


def _faces_note(faces: dict, spec: str) -> str:
    """One line: how often A6's detectors still find the faces in ``spec``'s release, against clean."""
    ms = faces.get("methods") or {}

    def rates(m: dict) -> str:
        found = [f"{det} {100 * views['A1']:.0f} %" for det, views in m.items()
                 if isinstance(views, dict) and views.get("A1") is not None]
        return ", ".join(found) or "–"

    return (f"<p class='note'>A6 face detection on {faces.get('n_images', '?')} face photos: faces found in "
            f"{html.escape(spec)}'s release by {rates(ms.get(spec) or {})} (clean photos: "
            f"{rates(ms.get('clean') or {})}; goal ≤ {100 * GOALS['face_rate']:.0f} %).</p>")


def audit_section(out_dir: str | os.PathLike, audit_dir: str | os.PathLike) -> tuple[RunSection, str, str]:
    """The quick audit on the run page, from ``audit_dir/results.json`` (and its pictures).

    Parameters
    ----------
    out_dir : path-like
        The run page's folder (links are made relative to it).
    audit_dir : path-like
        The folder :func:`visualmixer.eval.report.quick_audit` wrote.

    Returns
    -------
    (RunSection, str, str)
        The section, the one-sentence verdict (:func:`verdict_sentence`) and the noise note.
    """
    out_dir, audit_dir = Path(out_dir), Path(audit_dir)
    results = json.loads((audit_dir / "results.json").read_text())
    found = verdict_method(results)
    verdict = verdict_sentence(results)
    rel = os.path.relpath(audit_dir, out_dir).replace(os.sep, "/")
    parts = [f"<p class='note'>Attacks on the victims' protected images (A1 direct view … A8 linkage); the full "
             f"tables, every method's reconstructions and the attack notes are on the "
             f"<a href='{html.escape(rel)}/index.html'>audit page</a> (raw numbers: "
             f"<a href='{html.escape(rel)}/results.json'>results.json</a>).</p>"]
    if (results.get("config") or {}).get("attacker_strength") == "weak attacker":
        parts.append("<p class='note'><b>Weak attacker</b> (quick preset): a small A3 U-Net trained briefly on "
                     "few of the attacker's own images; <code>visualmixer audit --full</code> measures one at full "
                     "strength.</p>")
    note = ""
    for ds, d in results["datasets"].items():
        agg = (results.get("aggregate") or {}).get(ds) or {}
        parts.append(f"<h3>{html.escape(ds)}: privacy vs utility</h3>")
        parts.append(f"<p><img alt='{html.escape(ds)} privacy-utility plot' "
                     f"src='{png_data_uri(privacy_utility_plot(ds, d))}'></p>")
        parts.append(_goal_table(d, agg))
        shown = [found[1]] if found and found[0] == ds else []
        for spec in shown:
            pic = report_image(audit_dir, f"{ds}-{spec}")
            if pic is None:
                continue
            attacks = d["methods"][spec].get("attacks", {})
            views = ["original", "protected", *(a for a in attacks if a not in NOT_PICTURED)]
            parts.append(f"<h3>Reconstructions of {html.escape(spec)}</h3><p class='note'>One row per victim: "
                         "the original, what is released, then each attack's best guess of the original.</p>")
            # the audit's grid has cells of GRID_CELL px + GRID_PAD px: one label over each column
            heads = "".join(f"<span style='width:{GRID_CELL + GRID_PAD}px'>{html.escape(t)}</span>"
                            for t in grid_column_titles(views))
            parts.append(f"<div class='gridhead'>{heads}</div>")
            parts.append(f"<p><img alt='{html.escape(ds)} {html.escape(spec)} reconstructions' "
                         f"src='{png_data_uri(pic.read_bytes())}'></p>")
        others = [(s, report_image(audit_dir, f"{ds}-{s}")) for s in d["methods"] if s not in shown]
        links = [f"<a href='{html.escape(rel)}/img/{html.escape(p.name)}'>{html.escape(s)}</a>" for s, p in others if p]
        if links:
            parts.append("<p class='note'>The other methods' reconstructions: " + ", ".join(links) + ".</p>")
    if found and "faces" in results:
        parts.append(_faces_note(results["faces"], found[1]))
    if found:
        note = noise_note(results, *found)
    return RunSection("Privacy audit (quick)", html="\n".join(parts)), verdict, note
