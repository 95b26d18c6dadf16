"""Summarise the issue-4 experiments (scripts/train_experiments.sh) as markdown tables.

Usage: python scripts/summarize_train.py [OUT_DIR]   (default out/exp)
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def _ms(vals, scale=100.0, fmt="{:.2f}"):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "—"
    m = statistics.fmean(vals) * scale
    sd = statistics.stdev(vals) * scale if len(vals) > 1 else 0.0
    lo, hi = min(vals) * scale, max(vals) * scale
    return f"{fmt.format(m)} ± {fmt.format(sd)} ({fmt.format(lo)}–{fmt.format(hi)})"


def main(out: Path) -> None:
    runs = {}
    for p in sorted(out.glob("*/metrics.json")):
        runs[p.parent.name] = json.loads(p.read_text())
    clean = {}
    for m in runs.values():
        c = m["config"]
        if c["target_vfe"] is None:
            clean[(c["data"], c["model"])] = m
    print("| run | target | mode | optimizer (lr) | achieved VFE train / test | test acc % "
          "(mean ± sd (min–max), 3 seeds) | loss vs clean (pp, paired by seed) | "
          "epoch s | obfuscation s/epoch | setup obfuscation s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, m in runs.items():
        c = m["config"]
        accs = [r["final_test_acc"] for r in m["runs"]]
        base = clean.get((c["data"], c["model"]))
        loss = "—"
        if base is not None and c["target_vfe"] is not None:
            by_seed = {r["seed"]: r["final_test_acc"] for r in base["runs"]}
            diffs = [by_seed[r["seed"]] - r["final_test_acc"] for r in m["runs"]
                     if r["seed"] in by_seed]
            loss = _ms(diffs)
        tv = [r["train_vfe"] for r in m["runs"] if r["train_vfe"] is not None]
        sv = [r["test_vfe"] for r in m["runs"] if r["test_vfe"] is not None]
        vfe = (f"{statistics.fmean(tv):.3f}" if tv else "—") + " / " + (
            f"{statistics.fmean(sv):.3f}" if sv else "—")
        ep = statistics.fmean(h["epoch_s"] for r in m["runs"] for h in r["history"])
        ob = statistics.fmean(h["obfuscate_s"] for r in m["runs"] for h in r["history"])
        setup = statistics.fmean(r["setup_obfuscate_s"] for r in m["runs"])
        print(f"| {name} | {c['target_vfe'] if c['target_vfe'] is not None else 'none'} | "
              f"{c['mode'] if c['target_vfe'] is not None else '—'} | {c['optimizer']} "
              f"({c['lr']:g}) | {vfe} | {_ms(accs)} | {loss} | {ep:.1f} | {ob:.1f} | "
              f"{setup:.1f} |")
    print()
    print("| run | final acc % | best acc % | epochs to 75 % | last-epoch loss oscillation "
          "(mean abs step-to-step change) | train loss last epoch |")
    print("|---|---|---|---|---|---|")
    for name, m in runs.items():
        if not name.startswith("fm-cnn-offline-0.5"):
            continue
        rs = m["runs"]
        ett = [next((h["epoch"] for h in r["history"] if h["test_acc"] >= 0.75), None)
               for r in rs]
        print(f"| {name} | {_ms([r['final_test_acc'] for r in rs])} | "
              f"{_ms([r['best_test_acc'] for r in rs])} | "
              f"{', '.join('never' if e is None else str(e) for e in ett)} | "
              f"{_ms([r['history'][-1]['loss_osc'] for r in rs], 1, '{:.4f}')} | "
              f"{_ms([r['history'][-1]['train_loss'] for r in rs], 1, '{:.4f}')} |")


def plots(out: Path, dest: Path) -> None:
    """Combined learning curves from the runs' checkpoints (step losses live there)."""
    import torch

    from visualmixer.train.loop import plot_curves

    def group(names):
        g = {}
        for n in names:
            runs = []
            for ck in sorted((out / n).glob("seed*/checkpoint.pt")):
                st = torch.load(ck, map_location="cpu", weights_only=False)
                runs.append({"history": st["history"], "step_losses": st["step_losses"]})
            if runs:
                g[n.removeprefix("fm-cnn-")] = runs
        return g

    dest.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in out.glob("fm-cnn-*") if (p / "metrics.json").exists())
    targets = [n for n in names if n.count("-") <= 3]
    optims = [n for n in names if n.startswith("fm-cnn-offline-0.5")]
    plot_curves(group(targets), dest / "train-targets.png")
    plot_curves(group(optims), dest / "train-optimizers.png")


if __name__ == "__main__":
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "out/exp")
    main(out_dir)
    if len(sys.argv) > 2:
        plots(out_dir, Path(sys.argv[2]))
