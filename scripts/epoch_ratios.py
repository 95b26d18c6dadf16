"""Epoch-time ratios of timing runs made in rounds, against a reference setting's runs.

Each setting is compared with the reference setting of the same rounds, as docs/performance.md
reports them.

Usage: python scripts/epoch_ratios.py DIR [DIR ...] [--against clean] [--boot 5000]

Each DIR holds ``visualmixer train`` outputs named ``<setting>-r<round>`` (e.g. ``clean-r1``,
``p2-r1``). For every setting: the median ``epoch_s`` of its pooled epochs over the reference's
in the same rounds, each round's ratio (median epoch over the reference's median epoch in that
round), the median of those ratios and a bootstrap 95 % interval of it (rounds resampled,
seeded: repeatable). Rounds are keyed by directory and round, so several sets of rounds pool.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
from collections import defaultdict
from pathlib import Path


def _epochs(run: Path) -> list[float]:
    return [h["epoch_s"] for r in json.loads((run / "metrics.json").read_text())["runs"] for h in r["history"]]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("--against", default="clean", help="the reference setting (default: clean)")
    p.add_argument("--boot", type=int, default=5000, help="bootstrap resamples")
    a = p.parse_args(argv)
    if a.boot < 1:
        raise SystemExit(f"--boot must be >= 1, got {a.boot}")
    runs: dict[str, dict[tuple[str, str], list[float]]] = defaultdict(dict)
    for d in a.dirs:
        for run in sorted(d.glob("*-r*/metrics.json")):
            m = re.fullmatch(r"(.+)-r(\d+)", run.parent.name)
            if m:
                runs[m[1]][(str(d), m[2])] = _epochs(run.parent)
    if a.against not in runs:
        raise SystemExit(f"no runs named {a.against}-r<N> in {', '.join(map(str, a.dirs))}")
    ref = runs[a.against]
    ref_all = statistics.median(e for v in ref.values() for e in v)
    print(f"reference {a.against}: median epoch {ref_all:.3f} s over {len(ref)} rounds")
    for name, by_round in sorted(runs.items()):
        rounds = [r for r in by_round if r in ref]
        if not rounds:
            print(f"  {name:12s} no round shared with {a.against}: left out")
            continue
        rng = random.Random(f"0-{name}")  # per setting: its interval does not depend on the others
        pooled = (statistics.median(e for r in rounds for e in by_round[r])
                  / statistics.median(e for r in rounds for e in ref[r]))  # the same rounds' epochs
        ratios = [statistics.median(by_round[r]) / statistics.median(ref[r]) for r in rounds]
        boot = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(a.boot))
        lo, hi = boot[int(0.025 * a.boot)], boot[int(0.975 * a.boot) - 1]
        mid = statistics.median(ratios)
        print(f"  {name:12s} {len(rounds):2d} rounds  pooled {pooled:.3f}x  median round {mid:.3f}x "
              f"(95% {lo:.3f}-{hi:.3f})  rounds {' '.join(f'{x:.3f}' for x in ratios)}")


if __name__ == "__main__":
    main()
