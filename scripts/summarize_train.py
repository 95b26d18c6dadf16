"""Summarise the issue-4 experiments (scripts/train_experiments.sh) as markdown tables.

Usage: python scripts/summarize_train.py [OUT_DIR [FIG_DIR [SUFFIX]]]   (default out/exp)

Prints (1) per data set and model the accuracy-loss grid over targets, offline and online, with
the highest target whose mean loss is <= 2.35 points; (2) the optimizer comparison at target 0.5;
and with FIG_DIR writes learning-curve figures (SUFFIX is added to their names, e.g. "-gpu").
Losses are paired by seed against the clean run with the same data set, model, epochs and sizes.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

CLAIM_PP = 2.35


def _ms(vals, scale=100.0, fmt="{:.2f}", spread=True):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "—"
    m = statistics.fmean(vals) * scale
    sd = statistics.stdev(vals) * scale if len(vals) > 1 else 0.0
    if not spread:
        return f"{fmt.format(m)} ± {fmt.format(sd)}"
    lo, hi = min(vals) * scale, max(vals) * scale
    return f"{fmt.format(m)} ± {fmt.format(sd)} ({fmt.format(lo)}–{fmt.format(hi)})"


def _group_key(c: dict) -> tuple:
    return (c["data"], c["model"], c["epochs"], c.get("train_size"), c.get("test_size"))


def load(out: Path) -> dict[str, dict]:
    runs = {}
    for p in sorted(out.glob("*/metrics.json")):
        if p.parent.is_symlink():  # an alias of another run (same configuration)
            continue
        runs[p.parent.name] = json.loads(p.read_text())
    return runs


def _loss(m: dict, base: dict | None) -> list[float]:
    if base is None:
        return []
    by_seed = {r["seed"]: r["final_test_acc"] for r in base["runs"]}
    return [by_seed[r["seed"]] - r["final_test_acc"] for r in m["runs"] if r["seed"] in by_seed]


def _vfe(m: dict) -> str:
    tv = [r["train_vfe"] for r in m["runs"] if r["train_vfe"] is not None]
    sv = [r["test_vfe"] for r in m["runs"] if r["test_vfe"] is not None]
    return (f"{statistics.fmean(tv):.3f}" if tv else "—") + " / " + (
        f"{statistics.fmean(sv):.3f}" if sv else "—")


def grids(runs: dict[str, dict]) -> None:
    clean = {}
    for m in runs.values():  # one clean reference per group: the default optimizer (Adam 1e-3)
        c = m["config"]
        if c["target_vfe"] is None and (c["optimizer"], c["lr"]) == ("adam", 0.001):
            clean[_group_key(c)] = m
    for key, base in clean.items():
        data, model, epochs, ntr, nte = key
        adam = {n: m for n, m in runs.items() if _group_key(m["config"]) == key
                and m["config"]["optimizer"] == base["config"]["optimizer"]
                and m["config"]["lr"] == base["config"]["lr"]}
        ntr = ntr or base["train_images"]
        nte = nte or base["test_images"]
        print(f"\n**{data}, {model}, {epochs} epochs, {ntr} train / {nte} test images, "
              f"{base['config']['optimizer']} lr {base['config']['lr']:g}, seeds "
              f"{', '.join(str(r['seed']) for r in base['runs'])}** — clean test accuracy "
              f"{_ms([r['final_test_acc'] for r in base['runs']])} %\n")
        print("| target | mode | achieved VFE train / test | test acc % (mean ± sd (min–max)) | "
              "loss vs clean, pp (paired by seed) | epoch s | obfuscation s/epoch |")
        print("|---|---|---|---|---|---|---|")
        best: dict[str, float | None] = {"offline": None, "online": None}
        rows = sorted((m for m in adam.values() if m["config"]["target_vfe"] is not None),
                      key=lambda m: (m["config"]["mode"], m["config"]["target_vfe"]))
        for m in rows:
            c = m["config"]
            loss = _loss(m, base)
            if loss and statistics.fmean(loss) * 100 <= CLAIM_PP:
                best[c["mode"]] = max(best[c["mode"]] or 0.0, c["target_vfe"])
            ep = statistics.fmean(h["epoch_s"] for r in m["runs"] for h in r["history"])
            ob = statistics.fmean(h["obfuscate_s"] for r in m["runs"] for h in r["history"])
            print(f"| {c['target_vfe']:g} | {c['mode']} | {_vfe(m)} | "
                  f"{_ms([r['final_test_acc'] for r in m['runs']])} | {_ms(loss)} | {ep:.1f} | "
                  f"{ob:.1f} |")
        print()
        for mode, t in best.items():
            if any(m["config"]["mode"] == mode for m in rows):
                print(f"- highest target with mean loss ≤ {CLAIM_PP} pp, {mode}: "
                      f"{'none' if t is None else f'{t:g}'}")


def optimizers(runs: dict[str, dict]) -> None:
    sel = {n: m for n, m in runs.items()
           if n.startswith("fm-cnn-offline-0.5") and m["config"]["model"] == "cnn"}
    if not sel:
        return
    group = _group_key(next(iter(sel.values()))["config"])
    cleans = {(m["config"]["optimizer"], m["config"]["lr"]): m for m in runs.values()
              if m["config"]["target_vfe"] is None and _group_key(m["config"]) == group}
    clean = cleans.get(("adam", 0.001))
    print("\n| optimizer | lr | final acc % | loss vs clean Adam 1e-3, pp | loss vs clean, same optimizer "
          "and lr, pp | best acc % | epochs to 75 % | last-epoch loss oscillation | train loss, last epoch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m in sorted(sel.values(), key=lambda m: (m["config"]["optimizer"], m["config"]["lr"])):
        c, rs = m["config"], m["runs"]
        same = cleans.get((c["optimizer"], c["lr"]))
        ett = [next((h["epoch"] for h in r["history"] if h["test_acc"] >= 0.75), None) for r in rs]
        print(f"| {c['optimizer']} | {c['lr']:g} | {_ms([r['final_test_acc'] for r in rs])} | "
              f"{_ms(_loss(m, clean), spread=False)} | {_ms(_loss(m, same), spread=False)} | "
              f"{_ms([r['best_test_acc'] for r in rs], spread=False)} | "
              f"{', '.join('never' if e is None else str(e) for e in ett)} | "
              f"{_ms([r['history'][-1]['loss_osc'] for r in rs], 1, '{:.4f}', False)} | "
              f"{_ms([r['history'][-1]['train_loss'] for r in rs], 1, '{:.4f}', False)} |")


def loader_workers(runs: dict[str, dict]) -> None:
    """Epoch time of the `loader-workers` runs: clean vs online in-process vs in a worker."""
    kinds = {}
    for n, m in runs.items():
        if n.startswith("lw-"):
            kinds.setdefault(n.split("-")[1], []).append(m)
    if "clean" not in kinds:
        return
    med = {k: statistics.median(h["epoch_s"] for m in ms for r in m["runs"] for h in r["history"])
           for k, ms in kinds.items()}
    print("\n| online obfuscation | epochs | epoch s (median) | × clean | waited for batches, s/epoch "
          "(median) | final test acc % |")
    print("|---|---|---|---|---|---|")
    for k, ms in sorted(kinds.items()):
        hs = [h for m in ms for r in m["runs"] for h in r["history"]]
        accs = sorted({round(100 * r["final_test_acc"], 2) for m in ms for r in m["runs"]})
        print(f"| {k} | {len(hs)} | {med[k]:.2f} | {med[k] / med['clean']:.3f} | "
              f"{statistics.median(h['obfuscate_s'] for h in hs):.2f} | "
              f"{', '.join(f'{a:.2f}' for a in accs)} |")


def plots(out: Path, dest: Path, suffix: str = "") -> None:
    """Combined learning curves from the runs' per-seed history.json (or, for runs written
    before history.json held the step losses, their checkpoints)."""
    import torch

    from visualmixer.train.loop import plot_curves

    def seed_run(seed_dir: Path) -> dict | None:
        hist = seed_dir / "history.json"
        if hist.exists():
            h = json.loads(hist.read_text())
            if "step_losses" in h:
                return {"history": h["history"], "step_losses": h["step_losses"]}
        ck = seed_dir / "checkpoint.pt"
        if ck.exists():
            st = torch.load(ck, map_location="cpu", weights_only=False)
            return {"history": st["history"], "step_losses": st["step_losses"]}
        return None

    def group(names, prefix):
        g = {}
        for n in names:
            runs = []
            for seed_dir in sorted((out / n).glob("seed*")):
                r = seed_run(seed_dir)
                if r is not None:
                    runs.append(r)
            if runs:
                g[n.removeprefix(prefix)] = runs
        return g

    dest.mkdir(parents=True, exist_ok=True)
    done = sorted(p.name for p in out.glob("*") if (p / "metrics.json").exists() and not p.is_symlink())
    grids = sorted({"-".join(n.split("-")[:2]) + "-" for n in done if n.count("-") == 3})
    for prefix in grids:  # fm-cnn- keeps its historical figure names
        stem = {"fm-cnn-": "train-targets", "photos-cnn-": "train-targets-photos"}.get(
            prefix, "train-targets-" + prefix.rstrip("-"))
        names = [n for n in done if n.startswith(prefix) and n.count("-") == 3
                 and (n.endswith(("none", "0.3", "0.5", "0.7")))]
        if names:
            plot_curves(group(names, prefix), dest / f"{stem}{suffix}.png")
    optims = [n for n in done if n.startswith("fm-cnn-offline-0.5-")]
    if len(optims) > 6:  # a wide sweep: plot each optimizer at its best learning rate only
        best: dict[str, tuple[float, str]] = {}
        for n in optims:
            m = json.loads((out / n / "metrics.json").read_text())
            acc = m["summary"]["final_test_acc"]["mean"]
            o = m["config"]["optimizer"]
            best[o] = max(best.get(o, (-1.0, "")), (acc, n))
        optims = sorted(n for _, n in best.values())
    if optims:
        plot_curves(group(optims, "fm-cnn-offline-0.5-"), dest / f"train-optimizers{suffix}.png")


if __name__ == "__main__":
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "out/exp")
    all_runs = load(out_dir)
    grids(all_runs)
    optimizers(all_runs)
    loader_workers(all_runs)
    if len(sys.argv) > 2:
        plots(out_dir, Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
