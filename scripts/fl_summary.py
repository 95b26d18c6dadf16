"""Markdown table of per-round test accuracy from scripts/fl_experiments.sh (mean ± spread over seeds)."""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def main(root: str = "out/fl") -> None:
    groups: dict[tuple, list[list[float]]] = defaultdict(list)
    for h in sorted(Path(root).glob("*/history.json")):
        d = json.loads(h.read_text())
        if not d.get("finished"):
            continue
        c = d["config"]
        setting = "clean" if c["target_vfe"] is None else f"VisualMixer (VFE {c['target_vfe']:g}, {c['mode']})"
        groups[(c["partition"], setting)].append([r["accuracy"] for r in d["rounds"]])
    if not groups:
        print("no finished runs under", root)
        return
    rounds = max(len(v[0]) for v in groups.values())
    print("| partition | setting | seeds | " + " | ".join(f"round {r}" for r in range(rounds)) + " |")
    print("|---|---|---|" + "---|" * rounds)
    for (part, setting), runs in sorted(groups.items()):
        cells = []
        for r in range(rounds):
            v = [100 * run[r] for run in runs if len(run) > r]
            sp = (max(v) - min(v)) / 2 if len(v) > 1 else 0.0
            cells.append(f"{statistics.fmean(v):.1f} ± {sp:.1f}")
        print(f"| {part} | {setting} | {len(runs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
