"""The timing helpers behind docs/performance.md's online-feed numbers run and compute what they say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(out: Path, name: str, epochs: list[float]) -> None:
    (out / name).mkdir(parents=True)
    history = [{"epoch": i, "epoch_s": e} for i, e in enumerate(epochs)]
    (out / name / "metrics.json").write_text(json.dumps({"runs": [{"history": history}]}))


def test_epoch_ratios_pairs_each_setting_with_the_reference_of_its_rounds(tmp_path):
    _run(tmp_path, "clean-r1", [4.0, 4.0, 4.2])
    _run(tmp_path, "clean-r2", [5.0, 5.0, 5.0])
    _run(tmp_path, "fast-r1", [3.6, 3.6, 3.6])  # 0.9x its round
    _run(tmp_path, "fast-r2", [4.5, 4.5, 4.5])  # 0.9x its round
    _run(tmp_path, "late-r2", [5.5, 5.5, 5.5])  # only in round 2: against round 2's clean runs
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "epoch_ratios.py"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "median round 0.900x (95% 0.900-0.900)" in lines["fast"]
    assert "pooled 1.100x" in lines["late"] and " 1 rounds" in lines["late"]
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "epoch_ratios.py"), str(tmp_path),
                          "--against", "nothing"], capture_output=True, text=True)
    assert bad.returncode != 0 and "no runs named nothing-r<N>" in bad.stderr


def test_bench_worker_feed_runs():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_worker_feed.py"), "--images", "512",
                          "--batch", "64", "--epochs", "2", "--step-ms", "1"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert "DataLoader, 1 worker: training-thread CPU" in out and "WorkerFeed, 1 worker: training-thread CPU" in out


def test_bench_mix_deal_runs_and_reports_its_ratios(tmp_path):
    out_json = tmp_path / "deal.json"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_mix_deal.py"), "--n", "200", "--k", "4",
                          "--repeats", "1", "--json", str(out_json)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert "k=  4 groups=   50: switched" in out and "of it)" in out
    row = json.loads(out_json.read_text())["rows"][0]
    assert row["switched_over_cyclic"] == row["switched_s"] / row["cyclic_s"]
    assert 0 < row["switched_share_of_mix"] == row["switched_s"] / row["mix_s"]
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_mix_deal.py"), "--k", "1"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "every --k must be >= 2" in bad.stderr
