"""Merge the results of several `visualmixer audit` runs on the same data into one table.

A long audit run a few methods at a time keeps every finished run; this gathers them. Each data
set's methods are taken from the runs in order (the first run's row of a method is kept); the
runs must agree on the data (sizes, shape, region, seed), so their `clean` rows are the same
reference. Writes the merged JSON and prints the Markdown tables
(`visualmixer.eval.report.markdown`).

Usage: python scripts/merge_audits.py MERGED.json RUN/results.json [RUN/results.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from visualmixer.eval.report.markdown import results_to_markdown

#: what must agree between runs merged into one table
SAME = ("n_train", "n_victims", "n_attacker", "shape", "region")


def merge(paths: list[Path]) -> dict:
    merged = json.loads(paths[0].read_text())
    merged["merged_from"] = [str(p) for p in paths]
    for p in paths[1:]:
        res = json.loads(p.read_text())
        if res.get("config", {}).get("seed") != merged.get("config", {}).get("seed"):
            raise SystemExit(f"{p}: another seed than {paths[0]}")
        for name, ds in res["datasets"].items():
            base = merged["datasets"].setdefault(name, ds)
            if base is ds:
                continue
            for k in SAME:
                if base.get(k) != ds.get(k):
                    raise SystemExit(f"{p}: {name} {k} is {ds.get(k)}, not {base.get(k)} as in {paths[0]}")
            for spec, row in ds["methods"].items():
                base["methods"].setdefault(spec, row)
            base["seconds"] = (base.get("seconds") or 0) + (ds.get("seconds") or 0)
    for ds in merged["datasets"].values():  # the DP-SGD reference row (training, not images) last
        ds["methods"] = dict(sorted(ds["methods"].items(), key=lambda kv: kv[0].startswith("dpsgd")))
    merged.setdefault("config", {})["methods"] = list(
        dict.fromkeys(spec for ds in merged["datasets"].values() for spec in ds["methods"]))
    return merged


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    out, paths = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    merged = merge(paths)
    out.write_text(json.dumps(merged, indent=1))
    print(results_to_markdown(merged))
    print(f"\nwrote {out} from {len(paths)} runs")


if __name__ == "__main__":
    main()
