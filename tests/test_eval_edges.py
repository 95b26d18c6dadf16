"""The evaluation layer's edges: a tie counted as a re-identification, flags that dropped an
attack or crashed late, infinite method parameters, report files of two runs mixed."""

from __future__ import annotations

import json

import pytest
import torch

from visualmixer.cli import main
from visualmixer.eval import metrics as M
from visualmixer.eval.attacks import attack_names
from visualmixer.eval.methods import parse_method
from visualmixer.eval.report.html import render_report


def test_a_constant_estimate_scores_chance_not_a_hit():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, 3, 16, 16), dtype=torch.uint8, generator=g)
    flat = M.reid_rate(torch.full_like(x, 128), x)
    assert flat["rate"] == pytest.approx(1 / 20) and not flat["hits"].any() and (flat["ties"] == 19).all()
    same = M.reid_rate(x, x)
    assert same["rate"] == 1.0 and same["hits"].all() and (same["ties"] == 0).all()
    twins = torch.cat([x[:1], x[:1], x[2:]])  # two identical originals: each estimate ties with one other
    assert M.reid_rate(twins, twins)["rate"] == pytest.approx((18 + 2 * 0.5) / 20)


def test_attacks_are_listed_in_numeric_order():
    assert attack_names()[:11] == tuple(f"A{i}" for i in range(1, 12))


@pytest.mark.parametrize("command", ["audit", "recommend"])
@pytest.mark.parametrize("flag, value, says", [
    ("--attacks", "A1,A2X", "argument --attacks: unknown attack(s) A2X"),
    ("--device", "nonsense", "argument --device: device='nonsense' is not a device name"),
])
def test_audit_and_recommend_refuse_bad_flags_at_once(command, flag, value, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, flag, value, "--out", str(tmp_path)])
    assert stop.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize("command, flag, value, says", [
    ("audit", "--seed", "-1", "argument --seed: expected an integer >= 0, got -1"),
    ("audit", "--seeds", "-1", "argument --seeds: expected an integer >= 0, got -1"),
    ("recommend", "--seed", "-1", "argument --seed: expected an integer >= 0, got -1"),
    ("audit", "--methods", "visualmixer:0.5/r120", "argument --methods: bad visualmixer option /r120 in "
                                                   "'visualmixer:0.5/r120': region 120 has 16 shuffle levels"),
    ("audit", "--methods", "visualmixer:0.3,0.5/r300", "argument --methods: bad visualmixer option /r300"),
])
def test_seeds_and_method_regions_are_usage_errors_naming_the_flag(command, flag, value, says, tmp_path, capsys,
                                                                   monkeypatch):
    import visualmixer.eval.recommend as rec
    import visualmixer.eval.report as report

    def never(*a, **k):
        raise AssertionError("the audit started")

    monkeypatch.setattr(report, "audit", never)
    monkeypatch.setattr(rec, "recommend", never)
    with pytest.raises(SystemExit) as stop:
        main([command, "--data", "fashion-mnist", flag, value, "--out", str(tmp_path / "o")])
    assert stop.value.code == 2 and says in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_method_region_the_core_refuses_is_refused_when_parsed():
    for side in (120, 257):
        with pytest.raises(ValueError, match=f"bad visualmixer option /r{side} in 'visualmixer:0.5/r{side}': region"):
            parse_method(f"visualmixer:0.5/r{side}")
    assert parse_method("visualmixer:0.5/r128").region == 128


@pytest.mark.parametrize("flag, value", [("--faces", "-3"), ("--detectors", "foo"), ("--detectors", "haar,x")])
def test_audit_checks_its_face_options(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["audit", flag, value, "--out", str(tmp_path)])
    assert stop.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_attacks_all_means_every_registered_attack():
    from visualmixer.cli._common import attack_list

    assert attack_list("all") == attack_names() and attack_list("a2, A1,a2") == ("A2", "A1")


@pytest.mark.parametrize("spec", ["blur:inf", "noise:inf", "noise:nan", "dppix:inf"])
def test_infinite_method_parameters_are_refused(spec):
    with pytest.raises(ValueError, match="finite number"):
        parse_method(spec)


def test_a_report_replaces_the_pictures_of_the_one_before(tmp_path, monkeypatch):
    from visualmixer.eval.report import html

    monkeypatch.setattr(html, "_intro", lambda page, results: None)
    old = tmp_path / "img" / "003-stale_clean.png"
    old.parent.mkdir()
    old.write_bytes(b"old")
    (tmp_path / "img" / ".report-pictures").write_text("003-stale_clean.png\n")  # an earlier report's
    (tmp_path / "img" / "mine.png").write_bytes(b"not the report's")
    path = render_report({"datasets": {}}, {"faces": {}}, tmp_path)
    assert path.read_text().endswith("</body></html>") and not old.exists()
    assert (tmp_path / "img" / "mine.png").read_bytes() == b"not the report's"
    assert json.loads((tmp_path / "results.json").read_text()) == {"datasets": {}}
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_report_that_fails_while_drawing_leaves_the_old_one(tmp_path, monkeypatch):
    from visualmixer.eval.report import html

    (tmp_path / "results.json").write_text('{"old": 1}')
    (tmp_path / "index.html").write_text("old page")

    def boom(page, results):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(html, "_intro", boom)
    with pytest.raises(RuntimeError, match="drawing failed"):
        render_report({"datasets": {}}, {}, tmp_path)
    assert (tmp_path / "results.json").read_text() == '{"old": 1}'
    assert (tmp_path / "index.html").read_text() == "old page"


@pytest.mark.parametrize("argv, says", [
    (["--regions", "1000"], "--regions: region must be at most 256 pixels"),
    (["--regions", "120"], "--regions: region 120 has 16 shuffle levels"),
    (["--max-face-rate", "2"], "--max-face-rate: a share of face photos, in [0, 1]"),
])
def test_recommend_checks_its_grid_and_budget(argv, says, tmp_path, capsys):
    assert main(["recommend", "--data", "fashion-mnist", *argv, "--out", str(tmp_path)]) == 2
    assert says in capsys.readouterr().err and not (tmp_path / "recommend.json").exists()


def test_reid_chunk_is_checked():
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="chunk must be an int >= 1, got 0"):
        M.reid_rate(x, x, chunk=0)


def test_any_source_reid_shares_ties_and_otherwise_is_the_nearest_among_the_sources():
    g = torch.Generator().manual_seed(1)
    gallery = torch.randint(0, 256, (20, 1, 16, 16), dtype=torch.uint8, generator=g)
    cand = torch.tensor([[0, 1, 1], [2, 2, 2], [5, 6, 7], [4, 4, 9]])  # repeats count once
    flat = M.reid_rate(torch.full((4, 1, 16, 16), 50, dtype=torch.uint8), gallery, torch.tensor([0, 2, 5, 4]),
                       candidates=cand)
    assert flat["any_rate"] == pytest.approx((2 / 20 + 1 / 20 + 3 / 20 + 2 / 20) / 4)
    noisy = (gallery[[1, 2, 9, 3]].float() + torch.randn(4, 1, 16, 16, generator=g) * 20).clamp(0, 255)
    r = M.reid_rate(noisy, gallery, torch.tensor([0, 2, 5, 4]), candidates=cand)
    assert r["any_rate"] == float((cand == r["nearest"][:, None]).any(dim=1).double().mean()) == 0.5


@pytest.mark.parametrize("fn", [M.ssim, M.psnr])
def test_metrics_of_no_images_say_so(fn):
    with pytest.raises(ValueError, match="x and x_hat are empty"):
        fn(torch.zeros(0, 1, 8, 8), torch.zeros(0, 1, 8, 8))
