"""Audit results as Markdown tables (the tables in docs/privacy.md are made with this).

Usage: ``python -m visualmixer.report.markdown OUT/results.json [...]``.
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


def results_to_markdown(results: dict) -> str:
    """One summary table per data set (+ the A6 table), every score beside the prior-only guess."""
    lines: list[str] = []
    for ds, d in results["datasets"].items():
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
        atks = [
            a
            for a in ("A1", "A2", "A3", "A5", "A5-grey")
            if any(a in r.get("attacks", {}) for r in d["methods"].values())
        ]
        head = (
            "| method | acc. % | loss pp | VFE | "
            + " | ".join(f"{a} SSIM" for a in atks)
            + " | best SSIM − prior | best re-id % | A4 best % |"
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
            cells = [
                name,
                _f(r.get("accuracy"), pct=True),
                _f(r.get("accuracy_loss_pp"), 1),
                _f(vfe),
                *[_f(r["attacks"][a]["ssim"]["mean"]) if a in r.get("attacks", {}) else "–" for a in atks],
                _f(s.get("ssim_over_prior")),
                _f(s.get("best_reid"), pct=True),
                _f(s.get("best_a4"), pct=True),
            ]
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
