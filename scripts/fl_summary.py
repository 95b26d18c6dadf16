"""Markdown table of per-round test accuracy from scripts/fl_experiments.sh (mean ± spread over seeds).

Usage: python scripts/fl_summary.py [OUT_DIR [FIGURE.png]]   (with a figure path: also a plot of
accuracy per round, one panel per partition, every seed drawn)
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def main(root: str = "out/fl", figure: str | None = None) -> None:
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
    if figure:
        plot(groups, figure)


def plot(groups: dict, figure: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = sorted({p for p, _ in groups})
    settings = sorted({s for _, s in groups})
    fig, axes = plt.subplots(1, len(parts), figsize=(5 * len(parts), 3.6), sharey=True, squeeze=False)
    for ax, part in zip(axes[0], parts, strict=True):
        for (p, setting), runs in sorted(groups.items()):
            if p != part:
                continue
            i = settings.index(setting)
            for j, run in enumerate(runs):
                ax.plot(range(len(run)), [100 * a for a in run], marker="o", color=f"C{i}",
                        alpha=0.8, label=setting if j == 0 else None)
        ax.set_title(f"partition {part}")
        ax.set_xlabel("round")
        ax.set_xticks(range(max(len(r) for v in groups.values() for r in v)))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy % (global model)")
    for ax in axes[0]:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    print("wrote", figure)


if __name__ == "__main__":
    main(*sys.argv[1:])
