"""`visualmixer recommend`: the cheapest setting that meets a risk budget on a user's images; resumable."""

import dataclasses
import json
import shlex

import pytest

import visualmixer.eval.recommend as rec
from test_audit_userdata import make_folder, make_hf
from visualmixer.cli import build_parser, main
from visualmixer.eval.methods.visualmixer import VM_OPTIONS
from visualmixer.eval.recommend import VARIANTS, Budget, obfuscate_command, recommend, settings_grid
from visualmixer.eval.report.presets import AuditConfig

#: tiny and fast: 1 epoch, narrow models, the attacks that score reconstructions
TINY = AuditConfig(n_train=15, n_victims=6, n_attacker=9, epochs=1, a3_epochs=1, a3_base=4, width=4,
                   attacks=("A1", "A2", "A3", "A5"), progress=False)
TINY_FLAGS = ["--epochs", "1", "--a3-epochs", "1", "--a3-base", "4", "--width", "4", "--attacks", "A1,A2,A3,A5", "-q"]
LOOSE = Budget(max_ssim_over_prior=1.0, max_reid=None)


def test_variants_are_the_registry_options_and_the_grid_validates():
    assert VARIANTS == ("plain",) + tuple(o[1:] for o in VM_OPTIONS if o not in ("/rN", "/cyclic"))
    assert set(VARIANTS) >= {"plain", "flat", "blocks", "keyblocks", "online"}
    assert settings_grid((0.5,), (None,), ("mix3/similar", "flat/online")) == [
        "visualmixer:0.5/mix3/similar", "visualmixer:0.5/flat/online"]
    assert settings_grid((0.3, 0.7), (None, 4), ("plain", "blocks")) == [
        "visualmixer:0.3", "visualmixer:0.3/blocks", "visualmixer:0.3/r4", "visualmixer:0.3/r4/blocks",
        "visualmixer:0.7", "visualmixer:0.7/blocks", "visualmixer:0.7/r4", "visualmixer:0.7/r4/blocks"]
    with pytest.raises(ValueError, match="variants: 'sideways' is not a VisualMixer variant .*choose from plain, flat"):
        settings_grid((0.5,), (None,), ("sideways",))
    with pytest.raises(ValueError, match=r"targets: a target VFE must be in \[0, 1\], got 1.5"):
        settings_grid((1.5,), (None,), ("plain",))
    with pytest.raises(ValueError, match="budget is empty"):
        Budget(None, None, None)
    with pytest.raises(ValueError, match="max_reid: must be a number >= 0"):
        Budget(max_reid=-1)


def test_obfuscate_command_uses_only_real_flags():
    obf = build_parser(only="obfuscate")
    for spec in ("visualmixer:0.5", "visualmixer:0.7/r8", "visualmixer:0.3/r4/flat"):
        words = shlex.split(obfuscate_command(spec, src="my photos", dst="out/vm"))
        args = obf.parse_args(words[1:])  # exits (SystemExit) on a flag obfuscate does not have
        assert args.src == "my photos" and args.key == "secret/my.key"
    args = obf.parse_args(shlex.split(obfuscate_command("visualmixer:0.3/r4/flat", src="s"))[1:])
    assert (args.target_vfe, args.region, args.channel_order) == (0.3, 4, False)
    for spec in ("visualmixer:0.5/blocks", "visualmixer:0.5/keyblocks", "visualmixer:0.5/online"):
        assert obfuscate_command(spec, src="s") is None
    # mixing is made by `visualmixer obfuscate --mix K` over class folders
    args = obf.parse_args(shlex.split(obfuscate_command("visualmixer:0.5/r8/mix4/similar/share0.5", src="s"))[1:])
    assert (args.region, args.mix, args.grouping, args.mix_share) == (8, 4, "similar", 0.5)
    args = obf.parse_args(shlex.split(obfuscate_command("visualmixer:0.5/mix2", src="s"))[1:])
    assert (args.mix, args.grouping, args.mix_share) == (2, None, None)  # the defaults: random, 1
    assert rec._audit_only("visualmixer:0.5/mix4/similar") == ""


def test_recommend_on_imagefolder_picks_the_cheapest_that_meets(tmp_path):
    src = make_folder(tmp_path / "imgs")
    lines = []
    res = recommend(f"imagefolder:{src}", out_dir=tmp_path / "out", budget=LOOSE, targets=(0.3, 0.7),
                    variants=("plain", "blocks"), config=TINY, log=lines.append)
    specs = {r["spec"] for r in res["rows"]}
    assert specs == {"visualmixer:0.3", "visualmixer:0.7", "visualmixer:0.3/blocks", "visualmixer:0.7/blocks"}
    ok = [r for r in res["rows"] if not r["fails"]]
    assert len(ok) == 4 and res["best"]["accuracy_loss_pp"] == min(r["accuracy_loss_pp"] for r in ok)
    assert any("time estimate" in s and "an estimate" in s for s in lines)
    text = rec.format_recommendation(res)
    assert f"Recommended: {res['best']['spec']}" in text
    assert f"visualmixer obfuscate {src}" in text or "audit-only" in text
    state = json.loads((tmp_path / "out" / "recommend.json").read_text())
    assert set(state["settings"]) == specs | {"clean"}


def test_no_setting_meets_says_which_came_closest(tmp_path):
    src = make_folder(tmp_path / "imgs")
    res = recommend(f"imagefolder:{src}", out_dir=tmp_path / "out", budget=Budget(max_ssim_over_prior=0.0,
                    max_reid=0.5), targets=(0.2, 0.9), config=TINY, log=lambda s: None)
    assert res["best"] is None and res["closest"]["spec"] in ("visualmixer:0.2", "visualmixer:0.9")
    text = rec.format_recommendation(res)
    assert "No setting meets the budget. Closest: " in text
    assert "re-identification (times chance)" in text and "vs --max-reid 0.5 (over by" in text
    assert "misses SSIM, re-id" in text
    assert "visualmixer obfuscate" not in text


def test_face_rate_budget_runs_a6_on_the_face_photos(tmp_path):
    src = make_folder(tmp_path / "imgs")
    res = recommend(f"imagefolder:{src}", out_dir=tmp_path / "out", targets=(0.5,), config=TINY, log=lambda s: None,
                    budget=Budget(max_ssim_over_prior=1.0, max_reid=None, max_face_rate=1.0))
    row = res["rows"][0]
    assert 0.0 <= row["face_rate"] <= 1.0 and not row["fails"]
    state = json.loads((tmp_path / "out" / "recommend.json").read_text())
    assert state["audit"]["attacks"][-1] == "A6" and "haar" in state["settings"]["visualmixer:0.5"]["A6"]
    strict = rec._row("visualmixer:0.5", state["settings"]["visualmixer:0.5"], Budget(max_face_rate=0.0))
    assert ("face_rate" in strict["fails"]) == (row["face_rate"] > 0)
    # dropping the face budget re-ranks the saved results (A6's go unused) instead of refusing them
    logs = []
    again = recommend(f"imagefolder:{src}", out_dir=tmp_path / "out", targets=(0.5,), config=TINY, log=logs.append,
                      budget=Budget(max_ssim_over_prior=1.0, max_reid=None))
    assert any("resuming: 2 finished settings" in line for line in logs) and again["rows"][0]["face_rate"] is not None


def test_a_face_budget_added_to_a_saved_run_says_so(tmp_path, monkeypatch):
    """Results saved without A6 cannot answer a face budget: the error names it (not "attacks")."""
    src = make_folder(tmp_path / "imgs")
    monkeypatch.setattr(rec, "_run_setting", lambda *a: {"accuracy": 0.5, "summary": {}})
    kw = dict(out_dir=tmp_path / "out", targets=(0.5,), config=TINY, log=lambda s: None)
    recommend(f"imagefolder:{src}", budget=Budget(max_ssim_over_prior=1.0, max_reid=None), **kw)
    with pytest.raises(ValueError, match=r"made without a face budget: max_face_rate=0.5 needs attack A6.*"
                                         r"overwrite=True redoes them"):
        recommend(f"imagefolder:{src}", budget=Budget(max_ssim_over_prior=1.0, max_reid=None, max_face_rate=0.5),
                  **kw)


def test_audit_only_best_also_names_the_cheapest_with_a_command():
    res = {"data": "imagefolder:/p", "budget": dataclasses.asdict(LOOSE), "shape": [3, 16, 16], "region": 4,
           "reference": {"accuracy": 0.9}, "failed": {}, "image_size": None, "state_file": "x", "notes": [],
           "rows": []}
    rows = [{"spec": "visualmixer:0.5/blocks", "accuracy_loss_pp": 1.0, "fails": {}},
            {"spec": "visualmixer:0.5", "accuracy_loss_pp": 2.0, "fails": {}}]
    for r in rows:
        r.update(accuracy=0.8, seconds=1, ssim_over_prior=0.01, reid_over_chance=1.0, face_rate=None)
    res.update(rows=rows, **rec._select(rows, LOOSE))
    text = rec.format_recommendation(res)
    assert "Recommended: visualmixer:0.5/blocks" in text and "audit-only: region permutation per image" in text
    assert "Cheapest setting with an obfuscate command: visualmixer:0.5" in text
    assert "visualmixer obfuscate /p DST --key secret/my.key --target-vfe 0.5" in text


def test_resume_does_not_recompute_finished_settings(tmp_path, monkeypatch):
    src = make_folder(tmp_path / "imgs")
    kw = dict(out_dir=tmp_path / "out", budget=LOOSE, targets=(0.3, 0.5, 0.7), config=TINY, log=lambda s: None)

    def stop_after_first_vm(spec, record):
        if spec != "clean":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        recommend(f"imagefolder:{src}", on_setting_done=stop_after_first_vm, **kw)
    saved = json.loads((tmp_path / "out" / "recommend.json").read_text())["settings"]
    assert set(saved) == {"clean", "visualmixer:0.3"}

    computed = []
    real = rec._run_setting
    monkeypatch.setattr(rec, "_run_setting", lambda cfg, spec, d, ctx: computed.append(spec) or real(cfg, spec, d, ctx))
    lines = []
    res = recommend(f"imagefolder:{src}", **{**kw, "log": lines.append})
    assert computed == ["visualmixer:0.5", "visualmixer:0.7"]
    assert any("resuming: 2 finished settings" in s for s in lines)
    row = next(r for r in res["rows"] if r["spec"] == "visualmixer:0.3")
    assert row["seconds"] == saved["visualmixer:0.3"]["seconds"]

    # a new budget re-ranks without recomputing; other audit settings or other data are refused
    computed.clear()
    lines.clear()
    recommend(f"imagefolder:{src}", **{**kw, "budget": Budget(max_ssim_over_prior=0.5), "log": lines.append})
    assert computed == [] and any("budget changed" in s for s in lines)
    with pytest.raises(ValueError, match="other audit settings.*epochs 1 -> 2.*overwrite=True"):
        recommend(f"imagefolder:{src}", **{**kw, "config": dataclasses.replace(TINY, epochs=2)})
    other = make_folder(tmp_path / "other", seed=5)
    with pytest.raises(ValueError, match="holds results for other data"):
        recommend(f"imagefolder:{other}", **kw)


def test_recommend_cli_on_hf_dataset(tmp_path, capsys):
    path = make_hf(tmp_path / "hf")
    out = tmp_path / "out"
    rc = main(["recommend", "--data", f"hf:{path}", "--out", str(out), "--targets", "0.3", "0.7",
               "--max-ssim-over-prior", "1", "--max-reid", "none", *TINY_FLAGS])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "Recommended: visualmixer:0." in text and "obfuscate_hf(datasets.load_from_disk(" in text
    assert "victims: re-identification chance" in text and "--victims N larger" in text and "n_victims" not in text
    cmd = next(line.strip() for line in text.splitlines() if line.strip().startswith("visualmixer obfuscate"))
    build_parser(only="obfuscate").parse_args(shlex.split(cmd)[1:])
    assert json.loads((out / "recommend.json").read_text())["data"] == f"hf:{path}"
    # the same command with another --epochs: refused, naming the flag and the difference
    rc = main(["recommend", "--data", f"hf:{path}", "--out", str(out), "--targets", "0.3", "0.7",
               *TINY_FLAGS[:1], "2", *TINY_FLAGS[2:]])
    err = capsys.readouterr().err
    assert rc == 2 and "other audit settings (epochs 1 -> 2)" in err and "--overwrite" in err and "--out DIR" in err
    # another utility model: refused the same way (saved results were measured with the audit's CNN)
    rc = main(["recommend", "--data", f"hf:{path}", "--out", str(out), "--targets", "0.3", "0.7",
               *TINY_FLAGS, "--utility-model", "region-sorted"])
    err = capsys.readouterr().err
    assert rc == 2 and "utility_model" in err and "--overwrite" in err
    out_rs = tmp_path / "out-rs"  # and the other way round: saved with the region-sorted model, asked without
    args = ["recommend", "--data", f"hf:{path}", "--targets", "0.3", "--max-ssim-over-prior", "1", "--max-reid", "none",
            *TINY_FLAGS]
    assert main([*args, "--out", str(out_rs), "--utility-model", "region-sorted"]) == 0
    capsys.readouterr()
    assert main([*args, "--out", str(out_rs)]) == 2
    assert "utility_model 'region-sorted' -> None" in capsys.readouterr().err


def test_recommend_cli_interrupt_and_none_meets(tmp_path, capsys, monkeypatch):
    src = make_folder(tmp_path / "imgs")
    args = ["recommend", "--data", f"imagefolder:{src}", "--out", str(tmp_path / "out"), "--targets", "0.4",
            "--max-ssim-over-prior", "0", "--max-reid", "0.5", *TINY_FLAGS]

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rec, "_run_setting", interrupted)
    assert main(args) == 130
    assert "interrupted; the finished settings are saved" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(args) == 1
    assert "No setting meets the budget. Closest: visualmixer:0.4" in capsys.readouterr().out


def test_the_same_seed_gives_the_same_recommendation(tmp_path):
    """Every setting is seeded from the audit's seed and its spec, as `visualmixer audit` seeds it."""
    src = make_folder(tmp_path / "imgs", per_class=6)
    cfg = dataclasses.replace(TINY, n_train=6, n_victims=6, n_attacker=6, attacks=("A1", "A2"))
    runs = [recommend(f"imagefolder:{src}", out_dir=tmp_path / f"out{i}", budget=LOOSE, targets=(0.5,),
                      variants=("plain", "blocks"), config=cfg, log=lambda s: None) for i in range(2)]
    rows = [[{k: v for k, v in r.items() if k != "seconds"} for r in res["rows"]] for res in runs]
    assert rows[0] == rows[1] and len(rows[0]) == 2


def test_balanced_mixing_has_an_obfuscate_command(capsys):
    obf = build_parser(only="obfuscate")
    cmd = obfuscate_command("visualmixer:1/mix8/balanced", src="s")
    assert cmd is not None and rec._audit_only("visualmixer:1/mix8/balanced") == ""
    args = obf.parse_args(shlex.split(cmd)[1:])
    assert (args.target_vfe, args.mix, args.mix_balanced, args.mix_share) == (1.0, 8, True, None)
    args = obf.parse_args(shlex.split(obfuscate_command("visualmixer:0.5/mix4/similar/share0.5/balanced", src="s"))[1:])
    assert (args.mix, args.grouping, args.mix_share, args.mix_balanced) == (4, "similar", 0.5, True)
    assert not obf.parse_args(shlex.split(obfuscate_command("visualmixer:0.5/mix4", src="s"))[1:]).mix_balanced
    with pytest.raises(SystemExit):
        main(["recommend", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert "Only plain and flat" not in helptext and "--mix-balanced" in helptext


def test_a_reid_limit_that_cannot_fail_is_refused(tmp_path, capsys, monkeypatch):
    """With 2 victims, re-identifying both is 2x chance: a limit of 2 could pass even `clean`."""
    src = make_folder(tmp_path / "imgs", classes=2, per_class=5)
    cfg = dataclasses.replace(TINY, n_train=4, n_victims=2, n_attacker=4)
    ran = []
    monkeypatch.setattr(rec, "_run_setting", lambda *a: ran.append(a) or {"error": "not run"})
    with pytest.raises(ValueError, match=r"max_reid: 2 times chance can never be exceeded with 2 victims .*"
                                         r"max_reid=X with X < 2.*max_reid=None"):
        recommend(f"imagefolder:{src}", out_dir=tmp_path / "out", targets=(0.5,), config=cfg, log=lambda s: None)
    assert ran == []
    # the command line: fitted to this folder the split has 2 victims too; the flags are named
    argv = ["recommend", "--data", f"imagefolder:{src}", "--targets", "0.5", "--out", str(tmp_path / "o2"), *TINY_FLAGS]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--max-reid 2: 2 times chance can never be exceeded with 2 victims" in err, err
    assert "--max-reid X with X < 2" in err and "--victims N" in err and "--max-reid none" in err and ran == []
    assert not (tmp_path / "o2").exists() and not (tmp_path / "out").exists()  # refused: no empty folder left
    # a limit below the number of victims can fail, so it is checked
    res = recommend(f"imagefolder:{src}", out_dir=tmp_path / "out", budget=Budget(max_reid=1.5), targets=(0.5,),
                    config=cfg, log=lambda s: None)
    assert ran and res["budget"]["max_reid"] == 1.5


@pytest.mark.parametrize("attacks", ["A4", "A9", "A4,A8"])
def test_attacks_that_reconstruct_nothing_cannot_measure_the_budget(attacks, tmp_path, capsys, monkeypatch):
    src = make_folder(tmp_path / "imgs")
    ran = []
    monkeypatch.setattr(rec, "_run_setting", lambda *a: ran.append(a) or {"error": "not run"})
    argv = ["recommend", "--data", f"imagefolder:{src}", "--targets", "0.5", "--out", str(tmp_path / "o"),
            *TINY_FLAGS[:-3], "--attacks", attacks, "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--attacks {attacks}: none of" in err and "select at least one of A1, A2, A3, A5, A7" in err, err
    assert ran == [] and not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="config.attacks: none of .* reconstructs the victims' images of visualmixer"):
        recommend(f"imagefolder:{src}", out_dir=tmp_path / "o", targets=(0.5,), log=lambda s: None,
                  config=dataclasses.replace(TINY, attacks=tuple(attacks.split(","))))
    assert ran == []


def test_a9_measures_mixed_settings_and_faces_need_no_reconstruction():
    b = Budget()
    assert rec.unscored_settings(("A9",), ["visualmixer:0.5/mix2"], b) is None
    assert "of visualmixer:0.5," in rec.unscored_settings(("A9",), ["visualmixer:0.5/mix2", "visualmixer:0.5"], b)
    assert rec.unscored_settings(("A2", "A4"), ["visualmixer:0.5", "visualmixer:0.5/blocks"], b) is None
    faces_only = Budget(max_ssim_over_prior=None, max_reid=None, max_face_rate=0.1)
    assert rec.unscored_settings(("A4",), ["visualmixer:0.5"], faces_only) is None


def test_an_out_that_is_a_file_is_refused_before_any_setting(tmp_path, capsys, monkeypatch):
    src = make_folder(tmp_path / "imgs")
    ran = []
    monkeypatch.setattr(rec, "_run_setting", lambda *a: ran.append(a) or {"error": "not run"})
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        assert main(["recommend", "--data", f"imagefolder:{src}", "--out", str(out), *TINY_FLAGS]) == 2
        err = capsys.readouterr().err
        assert f"--out: {out} " in err and ("is not a folder" in err or "cannot be created" in err), err
        with pytest.raises(ValueError, match="out_dir: "):
            recommend(f"imagefolder:{src}", out_dir=out, budget=LOOSE, config=TINY, log=lambda s: None)
    assert ran == [] and (tmp_path / "file").read_text() == "x"
