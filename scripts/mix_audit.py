"""Privacy audit of keyed region mixing against the frontier methods, one method per run (resumable).

Each method spec is audited in its own :func:`visualmixer.eval.report.audit` run (``clean`` is added
by the audit as the utility reference and costs little: nothing to invert), written to
``OUT/<spec>/`` (``index.html``, ``results.json``) as soon as it finishes; a finished spec is
skipped when the script is run again. ``--merge`` gathers every finished spec into
``OUT/results.json`` (one data set, the ``clean`` row of the first run as the reference; the data
split, utility model and seeds are the same in every run, so the clean rows agree) and prints a
Markdown table.

    OMP_NUM_THREADS=1 nice -n 10 python scripts/mix_audit.py --out out/mix-audit \\
        --specs visualmixer:0.5/mix4/similar visualmixer:0.5
    python scripts/mix_audit.py --out out/mix-audit --merge
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from visualmixer.eval.report import AuditConfig, audit
from visualmixer.eval.report.seeds import merge_runs

SPECS = (
    "visualmixer:0.5/mix4/similar",
    "visualmixer:0.5",
    "visualmixer:0.5/mix2/similar",
    "visualmixer:0.5/mix4",
    "pixelate:4",
    "noise:0.3",
    "scramble:4",
    "visualmixer:0.5/r14",
)
ATTACKS = ("A1", "A2", "A3", "A4", "A5", "A8")


def _folder(out: Path, spec: str) -> Path:
    return out / spec.replace(":", "_").replace("/", "_")


def config(args, spec: str) -> AuditConfig:
    return AuditConfig(
        datasets=(args.dataset,), methods=(spec,), attacks=tuple(args.attacks), n_train=args.n_train,
        n_victims=args.n_victims, n_attacker=args.n_attacker, epochs=args.epochs, a3_epochs=args.a3_epochs,
        a3_base=args.a3_base, a3_patience=args.a3_patience, a3_val_fraction=0.1, width=16,
        attacker_strength=args.strength, seed=args.seed, progress=False, face_detectors=(), threads=1,
    )


def run(args) -> None:
    torch.set_num_threads(1)
    for spec in args.specs:
        folder = _folder(args.out, spec)
        if (folder / "results.json").exists():
            print(f"[mix_audit] {spec}: done already", flush=True)
            continue
        t0 = time.time()
        audit(folder, config(args, spec), log=lambda s: print(s, flush=True))
        print(f"[mix_audit] {spec}: {time.time() - t0:.0f} s", flush=True)


def merge(args) -> None:
    """Gather ``OUT/*/results.json`` into ``OUT/results.json`` and print the table."""
    runs = sorted(args.out.glob("*/results.json"))
    if not runs:
        raise SystemExit(f"no finished runs under {args.out}")
    results = [json.loads(p.read_text()) for p in runs]
    merged = merge_runs(results, [str(p) for p in runs])
    name = next(iter(merged["datasets"]))
    mds = merged["datasets"][name]
    merged["runs"] = {}
    for p, res in zip(runs, results, strict=True):
        clean = res["datasets"][name]["methods"].get("clean", {})
        merged["runs"][p.parent.name] = {"seconds": res.get("seconds"), "clean_accuracy": clean.get("accuracy")}
    (args.out / "results.json").write_text(json.dumps(merged, indent=1))
    prior = mds["prior"]["class_mean"]
    print(f"wrote {args.out / 'results.json'} ({len(runs)} runs); prior SSIM {prior['ssim']['mean']:.3f}, "
          f"re-id {100 * prior['reid']['rate']:.1f} %")
    print("| method | acc. % (audit) | A1 SSIM | A2 SSIM | A3 SSIM | A5 SSIM | best SSIM − prior | A3 re-id % "
          "| best re-id % | any source: best SSIM − prior, best re-id % | A4 best % | A8 link % "
          "| A8 victim link % (chance) | membership AUC |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for spec, r in mds["methods"].items():
        print(_row(spec, r))


def _num(summary: dict, key: str) -> float:
    """A summary number, NaN where the attack behind it did not run."""
    v = summary.get(key)
    return float("nan") if v is None else float(v)


def _any_source(s: dict) -> str:
    """Mixed releases scored against the closest of a collage's sources (the prior scored alike)."""
    if s.get("best_reid_any_source") is None:
        return "–"
    return f"{_num(s, 'ssim_any_source_over_prior'):+.3f}, {100 * _num(s, 'best_reid_any_source'):.1f}"


def _row(spec: str, r: dict) -> str:
    if "error" in r:
        return f"| {spec} | failed: {r['error']} |"
    s, a = r.get("summary", {}), r.get("attacks", {})
    nan = float("nan")

    def ssim(name: str) -> str:
        return f"{a[name]['ssim']['mean']:.3f}" if name in a else "–"

    a3_reid = 100 * a["A3"]["reid"]["rate"] if "A3" in a else nan
    return (f"| {spec} | {100 * r['accuracy']:.1f} | {ssim('A1')} | {ssim('A2')} | {ssim('A3')} | {ssim('A5')} "
            f"| {_num(s, 'ssim_over_prior'):+.3f} ({s.get('best_ssim_attack')}) | {a3_reid:.1f} "
            f"| {100 * _num(s, 'best_reid'):.1f} | {_any_source(s)} | {100 * _num(s, 'best_a4'):.1f} "
            f"| {100 * _num(s, 'link_rate'):.1f} | {_victim_link(r)} | {_num(s, 'membership_auc'):.2f} |")


def _victim_link(r: dict) -> str:
    """A8 the other way round: each file's closest released region lies in an image holding a piece of it."""
    a8 = r.get("A8") or {}
    if a8.get("victim_link_rate") is None:
        return "–"
    return f"{100 * a8['victim_link_rate']:.1f} ({100 * a8['victim_link_chance']:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/mix-audit"))
    ap.add_argument("--specs", nargs="+", default=list(SPECS))
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--attacks", nargs="+", default=list(ATTACKS), help=f"default: {' '.join(ATTACKS)}")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-victims", type=int, default=500)
    ap.add_argument("--n-attacker", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--a3-epochs", type=int, default=10)
    ap.add_argument("--a3-base", type=int, default=32)
    ap.add_argument("--a3-patience", type=int, default=2)
    ap.add_argument("--strength", default="full strength")
    ap.add_argument("--seed", type=int, default=0, help="the audit's seed: data split, keys, attackers (default 0)")
    ap.add_argument("--merge", action="store_true", help="merge finished runs into OUT/results.json")
    args = ap.parse_args()
    merge(args) if args.merge else run(args)


if __name__ == "__main__":
    main()
