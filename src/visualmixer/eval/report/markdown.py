"""Audit results as Markdown tables (the tables in docs/privacy.md are made with this).

Usage: ``python -m visualmixer.eval.report.markdown OUT/results.json [...]``.
"""

from __future__ import annotations

import json
import math
import sys

__all__ = ["results_to_markdown"]


def _f(v, nd=2, pct=False):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.{nd}f}"


def _pm(st: dict | None, fallback, nd=2, pct=False):
    """``mean ± sd`` of an aggregate entry when it has more than one value, else ``fallback``."""
    if isinstance(st, dict) and (st.get("n") or 0) > 1 and st.get("mean") is not None:
        k = 100.0 if pct else 1.0
        d = 1 if pct else nd
        return f"{k * st['mean']:.{d}f} ± {k * (st.get('sd') or 0.0):.{d}f}"
    return _f(fallback, nd, pct)


def _train_cell(tu: dict | None) -> str:
    """``acc % (loss pp)`` of a ``train_utility`` entry, ``± sd`` when it has several seeds."""
    if not tu:
        return "–"
    acc, loss = tu.get("accuracy") or {}, tu.get("loss_pp") or {}
    if acc.get("mean") is None:
        return "–"
    a = f"{100 * acc['mean']:.1f}"
    if (acc.get("n") or 0) > 1 and acc.get("sd") is not None:
        a += f" ± {100 * acc['sd']:.1f}"
    lo = "–" if loss.get("mean") is None else f"{loss['mean']:.1f}"
    if (loss.get("n") or 0) > 1 and loss.get("sd") is not None:
        lo += f" ± {loss['sd']:.1f}"
    return f"{a} ({lo})"


def _attack_columns(d: dict) -> list[str]:
    """The scored estimates of a data set, standard ones first, then those of added attacks."""
    found = list(dict.fromkeys(a for r in d["methods"].values() for a in r.get("attacks", {})))
    known = ("A1", "A2", "A3", "A5", "A5-grey", "A5-colour", "A7", "A7+A5")
    return [a for a in known if a in found] + [a for a in found if a not in known]


def results_to_markdown(results: dict) -> str:
    """One summary table per data set (+ the A6 table), every score beside the prior-only guess.

    With several seeds (``results["aggregate"]`` with n > 1) the cells show ``mean ± sd`` over
    seeds; with ``train_utility`` entries (``visualmixer audit --train-results``) a column
    "train acc. % (loss pp)" shows the matching ``visualmixer train`` accuracy and its loss
    against the clean run.
    """
    lines: list[str] = []
    seeds = results.get("seeds") or []
    if len(seeds) > 1:
        lines.append(f"Mean ± sd over {len(seeds)} seeds ({', '.join(map(str, seeds))}).\n")
    for ds, d in results["datasets"].items():
        agg_ds = (results.get("aggregate") or {}).get(ds, {})
        prior = d["prior"]
        pc, pg = prior["class_mean"]["ssim"]["mean"], prior["global_mean"]["ssim"]["mean"]
        lines.append(
            f"**{ds}** — {d['n_train']} training images, {d['n_victims']} victims "
            f"(re-identification chance {_f(d['reid_chance'], pct=True)} %), {d['n_attacker']} attacker images, "
            f"{d['shape'][1]}×{d['shape'][2]}×{d['shape'][0]}, region {d['region']} px, "
            f"accuracy chance {_f(d['chance_accuracy'], pct=True)} %. Prior-only guess: SSIM "
            f"{_f(pc)} (class mean), {_f(pg)} (global mean); re-identification of the class-mean "
            f"guess {_f(prior['class_mean']['reid']['rate'], pct=True)} %.\n"
        )
        atks = _attack_columns(d)
        has_train = any(r.get("train_utility") for r in d["methods"].values())
        head = (
            "| method | acc. % | loss pp | VFE | "
            + " | ".join(f"{a} SSIM" for a in atks)
            + " | best SSIM − prior | best re-id % | A4 best % | A8 link % | A8 victim link % |"
            + (" train acc. % (loss pp) |" if has_train else "")
        )
        lines.append(head)
        lines.append("|" + "---|" * (head.count("|") - 1))
        for spec, r in d["methods"].items():
            if r.get("error"):
                lines.append(f"| {spec} | failed: {r['error'][:80]} |" + " |" * (head.count("|") - 3))
                continue
            s = r.get("summary", {})
            vfe = (r.get("achieved_vfe") or r.get("receiver_vfe") or {}).get("mean")
            name = spec + (f" (ε={r['epsilon']:.2g})" if r.get("epsilon") is not None else "")
            ag = agg_ds.get(spec) or {}
            ag_ssim = ag.get("ssim") or {}
            cells = [
                name,
                _pm(ag.get("accuracy"), r.get("accuracy"), pct=True),
                _pm(ag.get("accuracy_loss_pp"), r.get("accuracy_loss_pp"), 1),
                _pm(ag.get("vfe"), vfe),
                *[
                    _pm(ag_ssim.get(a), r["attacks"][a]["ssim"]["mean"]) if a in r.get("attacks", {}) else "–"
                    for a in atks
                ],
                _pm(ag.get("ssim_over_prior"), s.get("ssim_over_prior")),
                _pm(ag.get("best_reid"), s.get("best_reid"), pct=True),
                _pm(ag.get("best_a4"), s.get("best_a4"), pct=True),
                _pm(ag.get("link_rate"), s.get("link_rate"), pct=True),
                _pm(ag.get("victim_link_rate"), s.get("victim_link_rate"), pct=True),
            ]
            if has_train:
                cells.append(_train_cell(r.get("train_utility")))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if "faces" in results:
        f = results["faces"]
        dets = sorted({k for m in f["methods"].values() for k in m if k != "error"})
        lines.append(
            f"**A6 face detection** — {f['n_images']} face photos at 128×128 (share of images in which "
            "a face is found, %).\n"
        )
        head = "| method | " + " | ".join(f"{d} on {v}" for d in dets for v in ("A1", "A2", "A5")) + " |"
        lines.append(head)
        lines.append("|" + "---|" * (head.count("|") - 1))
        for spec, m in f["methods"].items():
            cells = []
            for d in dets:
                for v in ("A1", "A2", "A5"):
                    val = m.get(d).get(v) if isinstance(m.get(d), dict) else None
                    cells.append(_f(val, pct=True))
            lines.append(f"| {spec} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - thin CLI
    for path in argv if argv is not None else sys.argv[1:]:
        with open(path) as fh:
            print(results_to_markdown(json.load(fh)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
