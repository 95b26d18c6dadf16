"""The all-data `visualmixer train` runs of docs/privacy.md §4c, one table over seeds.

Reads ``out/mix-train/<setting>[-s<seed>]/metrics.json`` (seed 0 has no suffix), pairs every run
with the clean run of the same seed and prints a Markdown table (final test accuracy per seed,
loss against clean in points, mean ± sd of the loss). ``--reference P`` takes the clean runs of
another prefix instead (e.g. another model's: ``--prefix rs-full --reference full``). With
``--json`` also writes every ``metrics.json`` read into one file (docs/data/mix-train-full.json;
with ``--reference``, its clean runs as well). ``--reference-file F`` reads the reference runs from
such a file instead of ``--root`` (clean runs measured in an earlier session, e.g.
``--reference lr2cos-full --reference-file docs/data/mix-train-lr2cos.json``).

Usage: python scripts/mix_train_table.py [--root out/mix-train] [--prefix full] [--reference P
       [--reference-file F]] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path


def read(root: Path, prefix: str) -> dict[str, dict]:
    """``{run folder: metrics}`` of the finished runs ``PREFIX-*`` under ``root``."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob(f"{prefix}-*/metrics.json"))}


def runs(found: dict[str, dict], prefix: str) -> dict[str, dict[int, dict]]:
    """``{setting: {seed: metrics}}`` of runs read by :func:`read` (folders ``PREFIX-SETTING[-sSEED]``)."""
    by_setting: dict[str, dict[int, dict]] = {}
    for name, metrics in found.items():
        m = re.fullmatch(rf"{re.escape(prefix)}-(.+?)(?:-s(\d+))?", name)
        if m is not None:
            by_setting.setdefault(m.group(1), {})[int(m.group(2) or 0)] = metrics
    return by_setting


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="out/mix-train")
    ap.add_argument("--prefix", default="full")
    ap.add_argument("--reference", help="prefix of the clean runs to compare against (default: --prefix)")
    ap.add_argument("--reference-file", help="read --reference's runs from this file (one written by --json)")
    ap.add_argument("--json", help="also write every metrics.json read into this file")
    a = ap.parse_args()
    if a.reference_file and not a.reference:
        ap.error("--reference-file needs --reference (the prefix of the clean runs in the file)")

    def accuracies(found: dict[str, dict], prefix: str) -> dict[str, dict[int, float]]:
        return {s: {seed: 100 * m["runs"][0]["final_test_acc"] for seed, m in by.items()}
                for s, by in runs(found, prefix).items()}

    own = read(Path(a.root), a.prefix)
    if a.reference_file:
        reference = json.loads(Path(a.reference_file).read_text())
    else:
        reference = read(Path(a.root), a.reference) if a.reference else own
    acc = accuracies(own, a.prefix)
    clean = accuracies(reference, a.reference or a.prefix).get("clean", {})
    seeds = sorted({seed for by in acc.values() for seed in by})
    print("| setting | " + " | ".join(f"seed {s}" for s in seeds) + " | loss pp, mean ± sd (seeds) |")
    print("|---|" + "---|" * len(seeds) + "---|")
    for setting in sorted(acc, key=lambda s: (s != "clean", s)):
        cells, losses = [], []
        own_clean = setting == "clean" and not a.reference  # the reference itself: no loss to show
        for s in seeds:
            v = acc[setting].get(s)
            if v is None:
                cells.append("–")
                continue
            loss = clean[s] - v if s in clean else None
            losses += [loss] if loss is not None and not own_clean else []
            cells.append(f"{v:.2f}" + (f" ({loss:.2f})" if loss is not None and not own_clean else ""))
        if own_clean:
            summary = "0"
        elif len(losses) > 1:
            summary = f"{statistics.mean(losses):.2f} ± {statistics.stdev(losses):.2f} ({len(losses)})"
        else:
            summary = f"{losses[0]:.2f} (1)" if losses else "–"
        print(f"| {setting} | " + " | ".join(cells) + f" | {summary} |")
    if a.json:
        every = dict(own)
        if a.reference:  # the clean runs compared against, too
            every.update({name: m for name, m in reference.items() if name.startswith(f"{a.reference}-clean")})
        Path(a.json).write_text(json.dumps(every, indent=1))
        print(f"wrote {a.json} ({len(every)} runs)")


if __name__ == "__main__":
    main()
