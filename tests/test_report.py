"""visualmixer.eval.report and `visualmixer audit`: the report renders and every image it references exists."""

import base64
import json
import re
from pathlib import Path

import pytest

from visualmixer.eval.report import AuditConfig, audit, expand_methods
from visualmixer.eval.report.audit import Protector, run_audit

PNG = b"\x89PNG\r\n\x1a\n"


def check_page(index: Path) -> str:
    text = index.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    srcs = re.findall(r'src="([^"]+)"', text)
    assert srcs, "the report shows no image"
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), f"not self-contained: {src[:40]}"
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    for href in re.findall(r"href=[\"']([^\"'#]+)[\"']", text):
        if not href.startswith(("http:", "https:", "data:")):
            assert (index.parent / href).is_file(), f"{href} is referenced but missing"
    return text


def test_expand_methods_and_specs():
    assert expand_methods(["visualmixer:0.3,0.5", "noise:0.1", "clean"]) == [
        "visualmixer:0.3",
        "visualmixer:0.5",
        "noise:0.1",
        "clean",
    ]
    p = Protector("visualmixer:0.4/r8/flat")
    assert (p.tau, p.region, p.channel_order) == (0.4, 8, False)
    with pytest.raises(ValueError, match="target VFE"):
        Protector("visualmixer:1.5")
    with pytest.raises(ValueError, match="unknown method"):
        Protector("rot13")


def test_tiny_audit_renders(tmp_path):
    cfg = AuditConfig(
        datasets=("faces",),
        methods=("visualmixer:0.5", "pixelate:4", "scramble:4"),
        n_victims=16,
        n_attacker=32,
        epochs=1,
        a3_epochs=1,
        a3_base=4,
        width=8,
        n_faces=1,
        examples=2,
        progress=False,
    )
    index = audit(tmp_path / "audit", cfg, log=lambda s: None)
    text = check_page(index)
    assert "privacy" in text and "visualmixer:0.5" in text and "prior: class mean image" in text
    res = json.loads((tmp_path / "audit" / "results.json").read_text())
    ds = res["datasets"]["faces"]
    assert set(ds["methods"]) == {"clean", "visualmixer:0.5", "pixelate:4", "scramble:4"}
    for r in ds["methods"].values():
        assert "error" not in r, r.get("error")
        assert {"A1", "A2", "A3", "A5"} <= set(r["attacks"])
        assert 0.0 <= r["accuracy"] <= 1.0 and "summary" in r and "goals_met" in r
    assert ds["methods"]["clean"]["attacks"]["A1"]["ssim"]["mean"] == pytest.approx(1.0)
    assert ds["prior"]["class_mean"]["ssim"]["mean"] > ds["prior"]["global_mean"]["ssim"]["mean"] - 0.05
    assert "faces" in res and res["faces"]["n_images"] >= 1
    pngs = list((tmp_path / "audit" / "img").glob("*.png"))
    assert len(pngs) == text.count('src="data:image/png')


def test_colour_audit_scores_a5_with_channel_order_recovery():
    cfg = AuditConfig(
        datasets=("photos",),
        methods=("visualmixer:0.5",),
        attacks=("A5",),
        n_train=16,
        n_victims=40,
        n_attacker=300,
        epochs=1,
        width=8,
        examples=2,
        progress=False,
    )
    res, _pics = run_audit(cfg, log=lambda s: None)
    atk = res["datasets"]["photos"]["methods"]["visualmixer:0.5"]["attacks"]
    assert {"A5", "A5-grey", "A5-colour"} <= set(atk)
    # putting the channel order back must beat the scrambled-colour A5 estimate clearly
    assert atk["A5-colour"]["ssim"]["mean"] > atk["A5"]["ssim"]["mean"] + 0.1


def test_cli_audit(tmp_path, capsys):
    from visualmixer.cli import main

    out = tmp_path / "cli"
    rc = main(
        ["audit", "--out", str(out), "--data", "faces", "--methods", "pixelate:4", "--attacks", "A1,A2",
         "--victims", "8", "--attacker", "16", "--epochs", "1", "-q"]
    )  # fmt: skip
    assert rc == 0
    assert str(out / "index.html") in capsys.readouterr().out
    check_page(out / "index.html")
    with pytest.raises(SystemExit) as stop:  # a usage error, at parsing (A9 exists now: un-mixing)
        main(["audit", "--out", str(out), "--data", "faces", "--attacks", "A99", "-q"])
    assert stop.value.code == 2 and "argument --attacks: unknown attack(s) A99" in capsys.readouterr().err
    out2 = tmp_path / "cli-rs"
    rc = main(["audit", "--out", str(out2), "--data", "faces", "--methods", "pixelate:4", "--attacks", "A1",
               "--victims", "8", "--attacker", "16", "--epochs", "1", "--utility-model", "region-sorted", "-q"])
    assert rc == 0 and json.loads((out2 / "results.json").read_text())["config"]["utility_model"] == "region-sorted"
    assert "utility model: region-sorted" in (out2 / "index.html").read_text(encoding="utf-8")


# --- issue 6 follow-up: /blocks, /online, several seeds, FRONTIER, --train-results -------------

import importlib  # noqa: E402
import statistics  # noqa: E402

import torch  # noqa: E402

from visualmixer.eval.report.markdown import results_to_markdown  # noqa: E402

A = importlib.import_module("visualmixer.eval.report.audit")  # the module (the package's `audit` is a function)
R = importlib.import_module("visualmixer.eval.report.runner")  # the runner (private helpers)


def _regions(x: torch.Tensor, r: int) -> torch.Tensor:
    """Full r×r regions of (N, C, H, W) as (N, regions, C*r*r), row-major over the grid."""
    n, c, h, w = x.shape
    gh, gw = h // r, w // r
    t = x[:, :, : gh * r, : gw * r].reshape(n, c, gh, r, gw, r).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(n, gh * gw, c * r * r)


def _region_multisets(x: torch.Tensor, r: int) -> list[list[tuple]]:
    """Per image, the sorted list of the regions' sorted pixel values (order-free on both levels)."""
    reg = _regions(x, r).sort(dim=2).values
    return [sorted(tuple(v.tolist()) for v in img) for img in reg]


def test_permute_regions_moves_whole_regions_only():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (5, 2, 30, 26), dtype=torch.uint8, generator=g)
    r = 4
    y = A.permute_regions(x, r, torch.Generator().manual_seed(2))
    assert y.shape == x.shape and y.dtype == x.dtype
    # edge strips (rows 28-29, columns 24-25) stay in place
    assert torch.equal(y[:, :, 28:], x[:, :, 28:]) and torch.equal(y[:, :, :, 24:], x[:, :, :, 24:])
    rx, ry = _regions(x, r), _regions(y, r)
    perms = []
    for i in range(x.shape[0]):
        # every output region is exactly one input region of the same image, each used once
        eq = (ry[i].unsqueeze(1) == rx[i].unsqueeze(0)).all(-1)  # (out, in)
        assert eq.sum(1).eq(1).all() and eq.sum(0).eq(1).all()
        perm = eq.int().argmax(1)
        assert not torch.equal(perm, torch.arange(len(perm))), "no region moved"
        perms.append(perm)
    assert any(not torch.equal(perms[0], p) for p in perms[1:]), "the same permutation for every image"


def test_blocks_protector_permutes_regions_of_the_obfuscated_image():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8, generator=g)
    for spec, r in (("visualmixer:0.5/r7/blocks", 7), ("visualmixer:0.5/blocks", 4)):  # 4: the size rule
        p = Protector(spec)
        assert p.blocks and p.region_for(28, 28) == r
        y = p(x)
        # obfuscation keeps each region's multiset, the block permutation moves whole regions:
        # the multiset of region multisets survives, the positions do not
        assert _region_multisets(y, r) == _region_multisets(x, r)
        same_place = (_regions(y, r).sort(dim=2).values == _regions(x, r).sort(dim=2).values).all(-1)
        assert not same_place.all(), f"{spec}: no region changed position"
        assert len(p.achieved_vfe) == x.shape[0]
    # without /blocks every region stays in place
    y = Protector("visualmixer:0.5/r7")(x)
    assert torch.equal(_regions(y, 7).sort(dim=2).values, _regions(x, 7).sort(dim=2).values)


def _region_layout(x, y, r):
    """For each image, which input region (by sorted content) sits at each output position."""
    rx, ry = _regions(x, r).sort(dim=2).values, _regions(y, r).sort(dim=2).values
    return [(ry[i].unsqueeze(1) == rx[i].unsqueeze(0)).all(-1).int().argmax(1) for i in range(x.shape[0])]


def test_keyblocks_one_secret_layout_per_protector_and_attacker_copies_get_their_own():
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8, generator=g)
    p = Protector("visualmixer:0.5/r7/keyblocks")
    assert p.keyblocks and not p.blocks
    a = _region_layout(x, p(x), 7)
    b = _region_layout(x, p(x), 7)  # a second call (another batch) of the same owner
    assert all(torch.equal(a[0], t) for t in a + b), "one layout for every image and call"
    assert not torch.equal(a[0], torch.arange(16)), "no region moved"
    other = p.attacker_copy()
    assert other.spec == p.spec and other is not p
    assert not torch.equal(_region_layout(x, other(x), 7)[0], a[0]), "the attacker must not get the owner's key"
    with pytest.raises(ValueError, match="not both"):
        Protector("visualmixer:0.5/blocks/keyblocks")
    s1, s2 = Protector("scramble:4"), None
    s2 = s1.attacker_copy()
    assert not torch.equal(s1(x), s2(x))  # keyed baselines: a different key for the attacker


def test_visualmixer_options_parse_and_bad_option_lists_valid_ones():
    p = Protector("visualmixer:0.5/r7/blocks/online")
    assert (p.tau, p.region, p.blocks, p.online, p.channel_order) == (0.5, 7, True, True, True)
    p = Protector("visualmixer:0.5/flat")
    assert (p.blocks, p.online, p.channel_order) == (False, False, False)
    for bad in ("visualmixer:0.5/bogus", "visualmixer:0.5/r", "visualmixer:0.5/rx"):
        with pytest.raises(ValueError) as info:
            Protector(bad)
        msg = str(info.value)
        for opt in ("/rN", "/flat", "/blocks", "/keyblocks", "/online"):
            assert opt in msg, (bad, msg)


def test_frontier_preset():
    f = A.FRONTIER
    assert f.datasets == ("fashion-mnist",) and "A6" not in f.attacks and tuple(f.seeds) == (0, 1, 2)
    assert (f.n_train, f.n_victims, f.epochs) == (3000, 500, 3)
    # the attacker at full strength for the CPU budget: many own images, a wide U-Net, early stopping
    assert f.n_attacker >= 10000 and f.a3_base >= 32 and f.a3_patience and f.a3_val_fraction > 0
    assert f.attacker_strength == "full strength" and A.QUICK.attacker_strength == "weak attacker"
    prots = [Protector(m) for m in f.methods]
    assert {"visualmixer:0.5/r14", "visualmixer:0.5/r7/blocks", "visualmixer:0.5/r7/online"} <= set(f.methods)
    assert any(p.blocks for p in prots) and any(p.online for p in prots)


class _Counting(Protector):
    def __init__(self, spec):
        super().__init__(spec)
        self.calls = []

    def __call__(self, x, chunk=1024):
        self.calls.append(x.shape[0])
        return super().__call__(x, chunk)


def _tiny_data(n_train=40, n_vic=12, k=3):
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    return SimpleNamespace(
        train_images=torch.randint(0, 256, (n_train, 1, 16, 16), dtype=torch.uint8, generator=g),
        train_labels=torch.randint(0, k, (n_train,), generator=g),
        victim_images=torch.randint(0, 256, (n_vic, 1, 16, 16), dtype=torch.uint8, generator=g),
        victim_labels=torch.randint(0, k, (n_vic,), generator=g),
        attacker_images=torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8, generator=g),
        attacker_labels=torch.randint(0, k, (8,), generator=g),
        num_classes=k,
    )


def test_online_protects_once_per_epoch_and_matches_the_offline_schedule():
    cfg = AuditConfig(epochs=3, width=8, seed=5, progress=False)
    data = _tiny_data()
    seen = []

    def protect(x):
        seen.append(x)
        return x

    rec = A.fit_online(cfg, data.num_classes, data.train_images, data.train_labels, protect)
    assert len(seen) == cfg.epochs
    # with the identity protection it is exactly the offline Recognizer (same seed, width, schedule)
    ref = A.Recognizer(data.num_classes, epochs=cfg.epochs, width=cfg.width, device=cfg.device, seed=cfg.seed)
    ref.fit(data.train_images, data.train_labels)
    for a, b in zip(rec.model.state_dict().values(), ref.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # through the audit: online = the victims + one protection per epoch; offline = train + victims
    cases = (("visualmixer:0.5/online", [12] + [40] * 3, True), ("visualmixer:0.5", [40, 12], False))
    for spec, expected, online in cases:
        p = _Counting(spec)
        r, _ = R._audit_method(cfg, p, data, None, 4, set())
        assert p.calls == expected, (spec, p.calls)
        assert r["online"] is online and r["blocks"] is False and 0.0 <= r["accuracy"] <= 1.0
        assert r["achieved_vfe"]["n"] == 12  # the victims' release only


def _fake_method(acc, loss, vfe, ssims, sop, reid, a4):
    return {
        "spec": "x",
        "kind": "visualmixer",
        "accuracy": acc,
        "accuracy_loss_pp": loss,
        "achieved_vfe": {"mean": vfe},
        "attacks": {a: {"ssim": {"mean": v}} for a, v in ssims.items()},
        "summary": {"ssim_over_prior": sop, "best_reid": reid, "best_a4": a4},
    }


def test_aggregate_seeds_is_mean_and_sd_of_the_seeds():
    rows = [  # acc, loss, vfe, A1, A2, ssim-prior, reid, a4
        (0.70, 1.5, 0.61, 0.30, 0.41, 0.21, 0.80, 0.72),
        (0.74, 0.5, 0.66, 0.36, 0.40, 0.27, 0.86, 0.70),
        (0.69, 2.5, 0.63, 0.33, 0.45, 0.18, 0.78, 0.75),
    ]
    per_seed = [
        {"datasets": {"fm": {"methods": {"vm": _fake_method(a, lo, v, {"A1": s1, "A2": s2}, sp, re, a4)}}}}
        for a, lo, v, s1, s2, sp, re, a4 in rows
    ]
    agg = A.aggregate_seeds(per_seed)["fm"]["vm"]
    cols = list(zip(*rows, strict=True))
    keys = ("accuracy", "accuracy_loss_pp", "vfe", None, None, "ssim_over_prior", "best_reid", "best_a4")
    for key, col in zip(keys, cols, strict=True):
        if key is None:
            continue
        st = agg[key]
        assert st["n"] == 3
        assert st["mean"] == pytest.approx(sum(col) / 3)
        assert st["sd"] == pytest.approx(statistics.stdev(col))
        assert (st["min"], st["max"]) == (min(col), max(col))
    assert agg["ssim"]["A1"]["mean"] == pytest.approx(sum(cols[3]) / 3)
    assert agg["ssim"]["A2"]["sd"] == pytest.approx(statistics.stdev(cols[4]))
    # a failed seed does not count
    per_seed[1]["datasets"]["fm"]["methods"]["vm"] = {"spec": "vm", "kind": "visualmixer", "error": "boom"}
    agg = A.aggregate_seeds(per_seed)["fm"]["vm"]
    assert agg["accuracy"]["n"] == 2 and agg["accuracy"]["mean"] == pytest.approx((0.70 + 0.69) / 2)


def _metrics(path: Path, runs: dict, **config):
    base = {"data": "fashion-mnist", "model": "cnn", "target_vfe": 0.5, "mode": "offline", "optimizer": "st-adam",
            "lr": 0.001, "epochs": 3, "batch_size": 128, "train_size": 1000, "test_size": 200,
            "image_size": None, "channels": None, "region": None}  # fmt: skip
    base.update(config)
    path.mkdir(parents=True, exist_ok=True)
    accs = list(runs.values())
    (path / "metrics.json").write_text(
        json.dumps(
            {
                "config": base,
                "runs": [{"seed": s, "final_test_acc": a} for s, a in runs.items()],
                "summary": {"final_test_acc": {"mean": sum(accs) / len(accs), "n": len(accs)}},
            }
        )
    )
    return str(path / "metrics.json")


def test_train_results_matching(tmp_path):
    clean = _metrics(tmp_path / "a" / "clean", {0: 0.80, 1: 0.82, 2: 0.81}, target_vfe=None)
    off = _metrics(tmp_path / "a" / "vm05", {0: 0.78, 1: 0.79, 2: 0.80})
    onl = _metrics(tmp_path / "b" / "deep" / "vm05-online", {0: 0.77, 1: 0.81}, mode="online")
    r7 = _metrics(tmp_path / "b" / "vm05-r7", {0: 0.75, 1: 0.76, 2: 0.70}, region=7)
    _metrics(tmp_path / "c" / "vm03", {0: 0.5}, target_vfe=0.3, epochs=9)  # no clean run with 9 epochs
    _metrics(tmp_path / "c" / "photos", {0: 0.1}, data="photos")  # no clean photos run
    _metrics(tmp_path / "c" / "r4-other-size", {0: 0.2}, region=4, train_size=50)  # sizes differ from clean
    _metrics(tmp_path / "c" / "distill", {0: 0.9}, model=None, mode=None, epochs=None)  # not a train run
    (tmp_path / "c" / "junk").mkdir()
    (tmp_path / "c" / "junk" / "metrics.json").write_text("{not json")
    (tmp_path / "c" / "other.json").write_text(json.dumps({"config": {}}))
    runs = A.load_train_runs([tmp_path])
    assert len(runs) == 7

    def find(spec, ds="fashion-mnist"):
        return A.find_train_utility(runs, ds, Protector(spec), 4)

    tu = find("visualmixer:0.5")
    assert tu["source"] == off and tu["clean_source"] == clean and tu["paired"]
    assert tu["accuracy"]["mean"] == pytest.approx((0.78 + 0.79 + 0.80) / 3) and tu["accuracy"]["n"] == 3
    diffs = [100 * (0.80 - 0.78), 100 * (0.82 - 0.79), 100 * (0.81 - 0.80)]
    assert tu["loss_pp"]["mean"] == pytest.approx(sum(diffs) / 3)
    assert tu["loss_pp"]["sd"] == pytest.approx(statistics.stdev(diffs))
    assert (tu["model"], tu["epochs"]) == ("cnn", 3)
    assert find("visualmixer:0.5/r4")["source"] == off  # region None = the size rule (4 px here)
    tu = find("visualmixer:0.5/online")
    assert tu["source"] == onl and tu["seeds"] == [0, 1]
    assert tu["loss_pp"]["mean"] == pytest.approx((100 * (0.80 - 0.77) + 100 * (0.82 - 0.81)) / 2)
    assert find("visualmixer:0.5/r7")["source"] == r7
    assert find("visualmixer:0.5/r7/online") is None
    assert find("visualmixer:0.5/blocks") is None and find("visualmixer:0.5/flat") is None
    assert find("visualmixer:0.3") is None and find("visualmixer:0.7") is None
    assert find("visualmixer:0.5", "photos") is None and find("pixelate:4") is None
    # attach: only the matching methods get an entry
    res = {"datasets": {"fashion-mnist": {"region": 4, "methods": {
        "clean": {}, "visualmixer:0.5": {}, "visualmixer:0.5/blocks": {}, "noise:0.1": {}}}}}  # fmt: skip
    assert A.attach_train_utility(res, [str(tmp_path)], log=lambda s: None) == 1
    assert "train_utility" in res["datasets"]["fashion-mnist"]["methods"]["visualmixer:0.5"]


def _md_results(seeds, with_train):
    prior = {"class_mean": {"ssim": {"mean": 0.3}, "reid": {"rate": 0.01}}, "global_mean": {"ssim": {"mean": 0.1}}}
    ds = {"n_train": 10, "n_victims": 10, "n_attacker": 10, "shape": [1, 28, 28], "region": 4,
          "chance_accuracy": 0.1, "reid_chance": 0.1, "prior": prior}  # fmt: skip
    per_seed = []
    for i, _ in enumerate(seeds):
        m = _fake_method(0.70 + 0.02 * i, 1.0 + i, 0.6, {"A1": 0.3 + 0.1 * i}, 0.2, 0.8, 0.7)
        per_seed.append({"datasets": {"fm": dict(ds, methods={"visualmixer:0.5": m})}})
    res = dict(per_seed[0], seeds=list(seeds), aggregate=A.aggregate_seeds(per_seed))
    if with_train:
        res["datasets"]["fm"]["methods"]["visualmixer:0.5"]["train_utility"] = {
            "accuracy": {"mean": 0.7864, "sd": 0.0232, "n": 3},
            "loss_pp": {"mean": 1.25, "sd": 0.5, "n": 3},
        }
    return res


def test_markdown_mean_sd_and_train_column():
    md = results_to_markdown(_md_results([0], with_train=False))
    assert "±" not in md and "train acc." not in md
    row = next(line for line in md.splitlines() if line.startswith("| visualmixer:0.5"))
    assert "| 70.0 | 1.0 |" in row and "0.30" in row
    md = results_to_markdown(_md_results([0, 1, 2], with_train=True))
    head = next(line for line in md.splitlines() if line.startswith("| method"))
    row = next(line for line in md.splitlines() if line.startswith("| visualmixer:0.5"))
    assert head.endswith("train acc. % (loss pp) |") and head.count("|") == row.count("|")
    accs = [0.70, 0.72, 0.74]
    assert f"{100 * statistics.fmean(accs):.1f} ± {100 * statistics.stdev(accs):.1f}" in row
    assert f"{statistics.fmean([1.0, 2.0, 3.0]):.1f} ± {statistics.stdev([1.0, 2.0, 3.0]):.1f}" in row
    assert f"{statistics.fmean([0.3, 0.4, 0.5]):.2f} ± {statistics.stdev([0.3, 0.4, 0.5]):.2f}" in row
    assert row.rstrip(" |").endswith("78.6 ± 2.3 (1.2 ± 0.5)") or "78.6 ± 2.3 (1.2 ± 0.5)" in row


def test_tiny_audit_two_seeds_blocks_online(tmp_path):
    cfg = AuditConfig(
        datasets=("faces",),
        methods=("visualmixer:0.5/blocks", "visualmixer:0.5/online"),
        attacks=("A1", "A2", "A5"),
        n_victims=8,
        n_attacker=16,
        epochs=1,
        width=8,
        examples=2,
        seeds=(0, 1),
        progress=False,
    )
    index = audit(tmp_path / "audit", cfg, log=lambda s: None)
    text = check_page(index)
    assert "Over 2 seeds" in text
    res = json.loads((tmp_path / "audit" / "results.json").read_text())
    assert res["seeds"] == [0, 1] and set(res["per_seed"]) == {"0", "1"}
    ds = res["datasets"]["faces"]
    assert ds["methods"]["visualmixer:0.5/blocks"]["blocks"] is True
    assert ds["methods"]["visualmixer:0.5/online"]["online"] is True
    for spec in ("clean", "visualmixer:0.5/blocks", "visualmixer:0.5/online"):
        vals = [res["per_seed"][s]["datasets"]["faces"]["methods"][spec]["accuracy"] for s in ("0", "1")]
        agg = res["aggregate"]["faces"][spec]["accuracy"]
        assert agg["n"] == 2 and agg["mean"] == pytest.approx(sum(vals) / 2)
        assert agg["sd"] == pytest.approx(statistics.stdev(vals))
        losses = [res["per_seed"][s]["datasets"]["faces"]["methods"][spec]["accuracy_loss_pp"] for s in ("0", "1")]
        assert res["aggregate"]["faces"][spec]["accuracy_loss_pp"]["mean"] == pytest.approx(sum(losses) / 2)
    assert "±" in results_to_markdown(res)


def test_cli_seeds_frontier_and_train_results_flags(tmp_path, monkeypatch):
    from visualmixer.cli import main

    captured = {}

    def fake_audit(out, cfg, log=None):
        captured["cfg"] = cfg
        return Path(out) / "index.html"

    monkeypatch.setattr("visualmixer.eval.report.audit", fake_audit)
    assert main(["audit", "--out", str(tmp_path), "--frontier", "-q"]) == 0
    assert captured["cfg"].methods == A.FRONTIER.methods and tuple(captured["cfg"].seeds) == (0, 1, 2)
    assert main(["audit", "--out", str(tmp_path), "--seeds", "3", "4", "--train-results", str(tmp_path), "-q"]) == 0
    assert tuple(captured["cfg"].seeds) == (3, 4) and captured["cfg"].train_results == (str(tmp_path),)
    assert main(["audit", "--out", str(tmp_path), "--frontier", "--seed", "7", "-q"]) == 0
    assert captured["cfg"].seeds is None and captured["cfg"].seed == 7
    assert main(["audit", "--out", str(tmp_path), "--train-results", str(tmp_path / "nope"), "-q"]) == 2


def test_utility_model_region_sorted_pays_nothing_for_the_in_region_shuffle():
    """With the region-sorted utility model a method that only shuffles inside regions (spatially
    and across channels) gets exactly the clean accuracy — the model sees the same inputs (the
    audit's utility scales by 1/255, no per-channel normalisation); the audit's CNN does not."""
    base = dict(datasets=("photos",), methods=("visualmixer:0.5",), attacks=("A1",), n_train=40,
                n_victims=40, n_attacker=20, epochs=2, width=8, examples=2, progress=False)

    def accuracies(**kw):
        res, _ = run_audit(AuditConfig(**base, **kw), log=lambda s: None)
        methods = res["datasets"]["photos"]["methods"]
        return methods["clean"]["accuracy"], methods["visualmixer:0.5"]["accuracy"], res["config"]

    clean, shuffled, config = accuracies(utility_model="region-sorted")
    assert config["utility_model"] == "region-sorted" and clean == shuffled
    clean_cnn, shuffled_cnn, _ = accuracies()
    assert clean_cnn != shuffled_cnn
    with pytest.raises(ValueError, match="utility_model must be None .* region-sorted-channels; got 'vgg'"):
        run_audit(AuditConfig(**base, utility_model="vgg"), log=lambda s: None)


def test_reid_is_also_summarised_over_the_prior_guess():
    """The labels alone (the class-mean guess) re-identify above chance: the summary gives the
    best attack's rate over both."""
    from visualmixer.eval.report.runner import _summarise_method

    ds = {"prior": {"class_mean": {"ssim": {"mean": 0.3}, "reid": {"rate": 0.016}}}, "reid_chance": 0.002,
          "chance_accuracy": 0.1}
    r = {"attacks": {"A1": {"ssim": {"mean": 0.4}, "reid": {"rate": 0.032}}}}
    _summarise_method(r, ds)
    assert r["summary"]["reid_over_chance"] == pytest.approx(16.0)
    assert r["summary"]["reid_over_prior"] == pytest.approx(2.0)
    # 5 of 6 victims re-identified is exactly 5 times chance: at a goal or budget of 5, not over it
    ds.update(reid_chance=1 / 6)
    r = {"attacks": {"A1": {"ssim": {"mean": 0.4}, "reid": {"rate": 5 / 6}}}}
    _summarise_method(r, ds)
    assert r["summary"]["reid_over_chance"] == 5.0


def test_report_pictures_cleanup_touches_only_its_own(tmp_path):
    """A rerun removes the pictures an earlier report wrote and no longer shows, never other files
    (a user's images in OUT/img: an --out pointed at a photo folder)."""
    from visualmixer.eval.report.files import write_report

    out = tmp_path / "out"
    (out / "img").mkdir(parents=True)
    (out / "img" / "holiday.png").write_bytes(b"the user's photo")
    write_report(out, {"img/001-a.png": b"a", "img/002-b.png": b"b", "index.html": "page"}, "index.html",
                 pictures="img")
    write_report(out, {"img/001-a.png": b"A", "index.html": "page 2"}, "index.html", pictures="img")
    assert sorted(p.name for p in (out / "img").iterdir()) == [".report-pictures", "001-a.png", "holiday.png"]
    assert (out / "img" / "holiday.png").read_bytes() == b"the user's photo"
    assert (out / "img" / "001-a.png").read_bytes() == b"A" and (out / "index.html").read_text() == "page 2"


def test_a_report_is_never_written_into_the_data(tmp_path, capsys):
    from visualmixer.cli import main
    from visualmixer.eval.report.files import prepare_out_dir

    data = tmp_path / "photos"
    (data / "cat").mkdir(parents=True)
    for out in (data, data / "report"):
        with pytest.raises(ValueError, match="out_dir: .* data folder"):
            prepare_out_dir(out, inputs=(data,))
    assert prepare_out_dir(tmp_path / "report", inputs=(data,)) == tmp_path / "report"
    for command in ("audit", "recommend"):
        assert main([command, "--data", f"imagefolder:{data}", "--out", str(data / "report"), "-q"]) == 2
        err = capsys.readouterr().err
        assert f"--out: {data / 'report'} is inside the data folder" in err, err
    assert not (data / "report").exists()
