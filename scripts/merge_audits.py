"""Merge the results of several `visualmixer audit` runs on the same data into one table.

A long audit run a few methods at a time keeps every finished run; this gathers them
(:func:`visualmixer.eval.report.seeds.merge_runs`: the runs must agree on the seed and on each
data set's sizes, shape and region, so their `clean` rows are the same reference). Writes the
merged JSON and prints the Markdown tables (`visualmixer.eval.report.markdown`).

Usage: python scripts/merge_audits.py MERGED.json RUN/results.json [RUN/results.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from visualmixer.eval.report.markdown import results_to_markdown
from visualmixer.eval.report.seeds import merge_runs


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    out, paths = Path(sys.argv[1]), sys.argv[2:]
    try:
        merged = merge_runs([json.loads(Path(p).read_text()) for p in paths], paths)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    out.write_text(json.dumps(merged, indent=1))
    print(results_to_markdown(merged))
    print(f"\nwrote {out} from {len(paths)} runs")


if __name__ == "__main__":
    main()
