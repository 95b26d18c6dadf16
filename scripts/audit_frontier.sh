#!/usr/bin/env bash
# The privacy-utility frontier on Fashion-MNIST (docs/privacy.md §4): `visualmixer audit
# --frontier` methods, one seed per output folder so that each finished seed is kept, then one
# combined table (mean ± sd over seeds). A folder OUT/seed<S>-extra (same seed, more methods, e.g.
# added later) is merged into seed S, its methods replacing those of the same name.
# Usage: bash scripts/audit_frontier.sh [SEED...]   (default 0 1)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SRC=${SRC:-src}
OUT=${OUT:-out/audit-frontier}
METHODS=(${METHODS:-clean visualmixer:0.5 visualmixer:0.5/r7 visualmixer:0.5/r14 visualmixer:0.5/blocks
         visualmixer:0.5/keyblocks visualmixer:0.5/r7/keyblocks visualmixer:0.5/online
         pixelate:4 scramble:4})
seeds=("$@"); [[ ${#seeds[@]} -eq 0 ]] && seeds=(0 1)
for s in "${seeds[@]}"; do
  dir="$OUT/seed$s${SUFFIX:-}"
  if [[ -f "$dir/results.json" ]]; then echo "skip $dir"; continue; fi
  # EXTRA: more audit flags, e.g. the earlier attacker of the §4b tables:
  # EXTRA="--attacker 3000 --a3-base 16 --a3-epochs 3"
  # TRAIN: training runs (scripts/train_experiments.sh) whose accuracies join the table, if present
  train=${TRAIN-out/exp2}; [[ -e $train ]] && train=(--train-results "$train") || train=()
  PYTHONPATH="$SRC" "$PY" -W ignore -m visualmixer audit --frontier --seed "$s" ${EXTRA:-} \
      --methods "${METHODS[@]}" "${train[@]}" --quiet --out "$dir"
done
PYTHONPATH="$SRC" "$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from visualmixer.eval.report.audit import aggregate_seeds
from visualmixer.eval.report.seeds import merge_runs
out = Path(sys.argv[1])
per = []
for p in sorted(out.glob("seed*/results.json")):
    if p.parent.name.endswith("-extra"):
        continue
    extra = p.parent.with_name(p.parent.name + "-extra") / "results.json"
    paths = [p] + ([extra] if extra.exists() else [])
    per.append(merge_runs([json.loads(q.read_text()) for q in paths], [str(q) for q in paths], replace=True))
agg = aggregate_seeds(per)
json.dump({"seeds": len(per), "aggregate": agg}, open(out / "aggregate.json", "w"), indent=1)
print("wrote", out / "aggregate.json", "from", len(per), "seeds")


def f(st, scale=1.0, nd=2):
    if not st or not st.get("n"):
        return "–"
    m, sd = st["mean"] * scale, (st["sd"] or 0.0) * scale
    return f"{m:.{nd}f}" if st["n"] == 1 else f"{m:.{nd}f} ± {sd:.{nd}f}"


atks = ["A1", "A2", "A3", "A5", "A7", "A7+A5"]
lines = ["| method | seeds | acc. % | loss pp | VFE | " + " | ".join(f"{a} SSIM" for a in atks)
         + " | best SSIM − prior | best re-id % | A4 best % |",
         "|---|---|---|---|---|" + "---|" * len(atks) + "---|---|---|"]
for ds, methods in agg.items():
    for spec, m in methods.items():
        lines.append(f"| {spec} | {m['n_seeds']} | {f(m['accuracy'], 100, 1)} | {f(m['accuracy_loss_pp'], 1, 1)} | "
                     f"{f(m['vfe'])} | " + " | ".join(f(m['ssim'].get(a)) for a in atks)
                     + f" | {f(m['ssim_over_prior'])} | {f(m['best_reid'], 100, 1)} | {f(m['best_a4'], 100, 1)} |")
(out / "aggregate.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
