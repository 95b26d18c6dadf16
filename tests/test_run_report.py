"""The run's one report: a repeatable quick audit, goals judged against the run's noise, the
one-sentence verdict on the page and at the end of the terminal output."""

import copy
import json
import re

import pytest
import torch

from visualmixer.eval.methods import parse_method
from visualmixer.eval.report import AuditConfig, quick_audit, render_report
from visualmixer.eval.report.runner import run_audit
from visualmixer.eval.report.verdict import NOISE_RULE, accuracy_band_pp, judge, method_judgement, verdict_sentence

#: a tiny audit of every registered method family the quick audit uses (a few seconds)
TINY = dict(n_train=40, n_victims=12, n_attacker=24, epochs=1, a3_epochs=1, a3_base=4, width=4, n_faces=1,
            examples=2, progress=False,
            methods=("clean", "visualmixer:0.5", "noise:0.1", "blur:1.5", "pixelate:4", "scramble:4"))


def _without_times(obj):
    if isinstance(obj, dict):
        return {k: _without_times(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_without_times(v) for v in obj]
    return obj


def tiny_results(seed=0, **kw):
    results, pictures = run_audit(AuditConfig(**{**TINY, "seed": seed, **kw}), log=lambda s: None)
    return results, pictures


@pytest.fixture(scope="module")
def tiny():
    """One tiny audit with seed 0 for the tests below (each gets its own copy)."""
    return tiny_results(0)


def test_same_seed_same_numbers_other_seed_other_protections(tiny):
    a = copy.deepcopy(tiny[0])
    b, _ = tiny_results(0)
    assert _without_times(a) == _without_times(b)  # every number of results.json, every method
    judged = a["datasets"]["fashion-mnist"]["methods"]["visualmixer:0.5"]["goals_judged"]
    assert set(judged) == {"ssim", "reid", "a4", "accuracy"}
    assert judged["accuracy"]["status"] in ("met", "missed", "noisy") and judged["accuracy"]["band"] > 0
    c, _ = tiny_results(3)
    ma, mc = a["datasets"]["fashion-mnist"]["methods"], c["datasets"]["fashion-mnist"]["methods"]
    assert not [r["error"] for r in [*ma.values(), *mc.values()] if "error" in r]
    assert ma["visualmixer:0.5"]["receiver_vfe"] != mc["visualmixer:0.5"]["receiver_vfe"]


def test_seeded_methods_draw_fresh_per_call_and_unseeded_stay_random():
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for spec in ("visualmixer:0.5", "noise:0.1", "scramble:4", "visualmixer:0.5/blocks"):
        one, two = parse_method(spec, seed=7), parse_method(spec, seed=7)
        first = one(x)
        assert torch.equal(first, two(x)), f"{spec}: same seed, same release"
        assert not torch.equal(one.attacker_copy()(x), first), f"{spec}: the attacker has its own randomness"
        assert not torch.equal(parse_method(spec)(x), parse_method(spec)(x)), f"{spec}: no seed = fresh randomness"
    vm = parse_method("visualmixer:0.5", seed=7)
    assert not torch.equal(vm(x), vm(x)), "a seeded method still draws new plans on every call (online re-keying)"


def test_noise_rule():
    assert judge(-3.0, 9.2, 2.35) == "noisy"  # the issue's case: a -3 point 'loss' from a tiny run
    assert judge(0.5, 1.0, 2.35) == "met" and judge(8.0, 2.0, 2.35) == "missed" and judge(None, 1, 2) is None
    band = accuracy_band_pp(0.70, 0.73, 200)
    assert 8.0 < band < 10.5  # twice the binomial standard error of a difference on 200 victims
    assert accuracy_band_pp(0.70, 0.73, 20_000) < 1.5
    assert accuracy_band_pp(0.70, 0.73, 20_000, {"sd": 4.0, "n": 3}) == 8.0  # the seeds' spread counts
    assert "twice" in NOISE_RULE and "too small a run to judge" in NOISE_RULE


def _issue_case(results):
    """The issue's case: VisualMixer 3 points MORE accurate than clean on 200 victims."""
    d = results["datasets"]["fashion-mnist"]
    d["n_victims"], d["reid_chance"] = 200, 1 / 200
    d["methods"]["clean"]["accuracy"] = 0.70
    d["methods"]["visualmixer:0.5"]["accuracy"] = 0.73
    d["methods"]["visualmixer:0.5"]["accuracy_loss_pp"] = -3.0
    return results


def test_a_loss_inside_the_noise_is_not_green_on_the_audit_page(tmp_path, tiny):
    results, pictures = copy.deepcopy(tiny[0]), tiny[1]
    results = _issue_case(results)
    j = method_judgement(results["datasets"]["fashion-mnist"], "visualmixer:0.5")
    assert j["accuracy"]["status"] == "noisy" and j["accuracy"]["band"] > 3.0
    sentence = verdict_sentence(results)
    assert sentence.startswith("Privacy verdict for visualmixer:0.5 on fashion-mnist "
                               "(weak attacker, 1 seed, 200 victims)")
    assert "accuracy loss -3.0 ± " in sentence and "too small a run to judge" in sentence
    assert "prior-only guess" in sentence and "chance" in sentence and sentence.endswith(").")
    page = render_report(results, pictures, tmp_path).read_text()
    assert sentence.replace("'", "&#x27;") in page
    row = page[page.index("<tr><td class='l'>visualmixer:0.5"):]
    row = row[: row.index("</tr>")]
    loss_cell = re.search(r"<td([^>]*)>-3\.00&nbsp;±&nbsp;[0-9.]+</td>", row)
    assert loss_cell is not None, row[:300]
    assert "class='noisy'" in loss_cell.group(1) and "too small a run to judge" in loss_cell.group(1)


def test_verdict_says_when_visualmixer_failed(tiny):
    results = copy.deepcopy(tiny[0])
    results["datasets"]["fashion-mnist"]["methods"]["visualmixer:0.5"] = {"kind": "visualmixer",
                                                                           "error": "RuntimeError: boom"}
    assert verdict_sentence(results) == ("No privacy verdict: visualmixer:0.5 failed on fashion-mnist "
                                         "(RuntimeError: boom).")


def test_verdict_uses_the_seeds_spread(tiny):
    results = copy.deepcopy(tiny[0])
    results = _issue_case(results)
    results["seeds"] = [0, 1, 2]
    results["aggregate"]["fashion-mnist"]["visualmixer:0.5"]["accuracy_loss_pp"] = {
        "mean": -3.0, "sd": 30.0, "min": -40, "max": 30, "n": 3}
    j = method_judgement(results["datasets"]["fashion-mnist"], "visualmixer:0.5",
                         results["aggregate"]["fashion-mnist"]["visualmixer:0.5"])
    assert j["accuracy"]["band"] == pytest.approx(60.0)
    assert "seed 0 of 3 seeds, bands over all 3" in verdict_sentence(results)  # (its numbers are seed 0's)


def fake_quick_compare(out_dir, targets=(None, 0.5), *, epochs=2, progress=False, **kw):
    """visualmixer.train.quick_compare on a few hundred images, one epoch."""
    from visualmixer.train.compare import quick_compare

    return quick_compare(out_dir, targets, epochs=1, train_size=200, test_size=100, progress=progress)


def fake_quick_audit(out_dir, *, target_vfe=0.5, progress=False, log=print):
    """visualmixer.eval.report.quick_audit (the real one) on the tiny sizes."""
    small = {k: v for k, v in TINY.items() if k not in ("methods", "progress")}
    return quick_audit(out_dir, target_vfe=target_vfe, progress=progress, log=log, **small)


def test_run_command_one_page_and_the_terminal_ends_with_its_verdict(tmp_path, capsys, monkeypatch):
    from visualmixer.cli import main

    monkeypatch.setattr("visualmixer.train.quick_compare", fake_quick_compare)
    monkeypatch.setattr("visualmixer.eval.report.quick_audit", fake_quick_audit)
    out = tmp_path / "run"
    rc = main(["run", "--out", str(out), "--size", "32", "--targets", "0.3", "0.6"])
    assert rc == 0
    cap = capsys.readouterr()
    lines = cap.out.strip().splitlines()
    verdict = lines[-1]
    assert verdict.startswith("Privacy verdict for visualmixer:0.5 on fashion-mnist (weak attacker, 1 seed, "
                              "12 victims)")
    # without a terminal: no progress bars, one line per stage
    assert "\r" not in cap.out + cap.err and "it/s" not in cap.err
    for stage in ("[1/3]", "[2/3]", "[3/3]"):
        assert sum(line.startswith(stage) for line in lines) == 1
    page = (out / "index.html").read_text()
    assert f"<p class='verdict' id='verdict'>{verdict}</p>" in page.replace("&#x27;", "'")
    assert "<pre>" not in page and "|---|" not in page  # tables rendered, not raw text
    assert "How noisy these numbers are" in page and "one-off obfuscation" in page
    assert "target 0.3" in page and "achieved VFE" in page and "privacy-utility plot" in page
    assert "Reconstructions of visualmixer:0.5" in page
    acc = json.loads((out / "train" / "accuracy.json").read_text())
    obf = [r for r in acc["rows"] if r["target_vfe"] == 0.5][0]
    assert obf["setup_obfuscate_s"] > 0 and len(obf["epochs"]) == 1 and acc["n_test"] == 100
