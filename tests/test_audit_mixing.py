"""Mixing in the audit: a registered method variant, attacks on collages scored against the main
source, A8 linkage, and A3's validation curve with early stopping."""

import json

import pytest
import torch

from visualmixer.data.datasets import FASHION_MNIST_DIR
from visualmixer.eval.attacks.a3_inversion import LearnedInversion
from visualmixer.eval.methods import parse_method
from visualmixer.eval.report import runner as R
from visualmixer.eval.report.presets import AuditConfig


def _data(n_train=48, n_vic=24, n_att=32, k=3, size=16):
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    base = torch.rand(n_train + n_vic + n_att, 1, 4, 4, generator=g)
    imgs = (torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear") * 255).to(torch.uint8)
    labels = torch.arange(imgs.shape[0]) % k
    a, b = n_train, n_train + n_vic
    return SimpleNamespace(train_images=imgs[:a], train_labels=labels[:a], victim_images=imgs[a:b],
                           victim_labels=labels[a:b], attacker_images=imgs[b:], attacker_labels=labels[b:],
                           num_classes=k)


def test_mix_spec_round_trip_and_errors():
    m = parse_method("visualmixer:0.5/mix4/similar")
    assert m.protects_sets and m.mix == 4 and m.similar and parse_method(m.spec).spec == m.spec
    assert not parse_method("visualmixer:0.5").protects_sets
    with pytest.raises(ValueError, match="K >= 2"):
        parse_method("visualmixer:0.5/mix1")
    with pytest.raises(ValueError, match="add /mixK"):
        parse_method("visualmixer:0.5/similar")
    with pytest.raises(ValueError, match="does not combine"):
        parse_method("visualmixer:0.5/mix2/blocks")


def test_tied_main_sources_are_counted_and_noted():
    sources = torch.tensor([[1, 1, 2, 3], [4, 5, 6, 7], [2, 2, 3, 3], [9, 9, 9, 9]])
    assert R._source_shares(sources) == {"main_share": 0.5625, "distinct_sources": 2.5, "main_tied": 0.5}
    data = _data(n_vic=64, k=2)  # per class one group of 32 >= the 16 regions of a 16 x 16 image
    notes = []
    for spec in ("visualmixer:0.5/mix2", "visualmixer:0.5/mix32/balanced", "visualmixer:0.5/mix32/balanced"):
        cfg = AuditConfig(epochs=1, width=8, progress=False, notes=notes)
        r, _ = R._audit_method(cfg, parse_method(spec), data, None, 4, {"A2"})
        assert (r["mix_sources"]["main_tied"] == 1.0) == spec.endswith("balanced")
    # a balanced group as large as the grid: every source holds one region of a collage (noted once)
    assert len(notes) == 1 and "mix32/balanced: most collages have no main source" in notes[0]


def test_mixed_release_is_attacked_and_scored_against_main_sources():
    cfg = AuditConfig(epochs=1, width=8, a3_epochs=2, a3_base=4, progress=False)
    data = _data()
    method = parse_method("visualmixer:0.5/mix2")
    r, pic = R._audit_method(cfg, method, data, None, 4, {"A2", "A3", "A8"})
    assert r["mix"] == 2 and r["mix_grouping"] == "random"
    assert 0.5 <= r["mix_sources"]["main_share"] < 1.0 and r["mix_sources"]["distinct_sources"] > 1.0
    assert torch.equal(pic["original"], data.victim_images[method.last_main][: pic["original"].shape[0]])
    assert {"A2", "A3"} <= set(r["attacks"]) and 0.0 <= r["accuracy"] <= 1.0
    assert r["A8"]["membership_auc"] >= 0.5 and r["A8"]["region_link_rate"] > 0.5
    # the other way round: each victim's closest released region sits in a collage holding a piece of it
    assert r["A8"]["victim_link_rate"] > r["A8"]["victim_link_chance"] > 0.0
    R._summarise_method(r, {"prior": {"class_mean": {"ssim": {"mean": 0.4}}}, "chance_accuracy": 0.1,
                            "reid_chance": 0.01})
    assert r["summary"]["victim_link_rate"] == r["A8"]["victim_link_rate"]
    assert r["a3_attacker"]["strength"] == "weak attacker" and len(r["a3_val_loss"]) == 2
    # also scored against the closest of each collage's sources, and the prior alike
    for a in ("A2", "A3"):
        anys = r["attacks"][a]["any_source"]
        assert anys["ssim"]["mean"] >= r["attacks"][a]["ssim"]["mean"] and 0.0 <= anys["reid"] <= 1.0
        assert anys["reid"] >= r["attacks"][a]["reid"]["rate"]
    assert r["prior_any_source"]["ssim"]["mean"] > 0.0


def test_a3_early_stopping_keeps_the_best_epoch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g)
    inv = LearnedInversion(lambda t: t.flip(-1), epochs=6, base=4, val_fraction=0.25, patience=1, seed=0)
    inv.fit(x)
    assert len(inv.val_history) == len(inv.history) <= 6
    assert inv.best_epoch == min(range(len(inv.val_history)), key=inv.val_history.__getitem__)
    with pytest.raises(ValueError, match="needs val_fraction"):
        LearnedInversion(lambda t: t, patience=2)
    out = inv.fit_pairs(x.flip(-1), x)
    assert out is inv and inv(x[:2]).shape == (2, 1, 8, 8)


def test_unmixing_relinks_regions_from_the_class_pool():
    from visualmixer.core.keys import Key
    from visualmixer.core.mixing import mix, region_sources
    from visualmixer.eval.attacks.a9_unmix import relink_regions

    data = _data(n_vic=40)
    x, y = data.victim_images, data.victim_labels
    key = Key.from_seed(3)
    res = mix(x, y, key=key, ids=range(40), k=2, target_vfe=0.0)
    src = region_sources(res.groups, key=key, ids=range(40), height=16, width=16)
    main = torch.mode(src, dim=1).values
    # with a perfect guide (the main sources themselves) most regions are re-linked to their main source
    relinked, chosen = relink_regions(res.images, y, x[main].float() / 255, 4)
    got = src.gather(0, chosen)
    assert (got == main[:, None]).float().mean() > (src == main[:, None]).float().mean()
    assert relinked.shape == x.shape and relinked.dtype == torch.uint8
    # every chosen region comes from an image of the same class
    assert bool((y[chosen] == y[:, None]).all())


def test_threading_follows_each_source_through_its_pool():
    from visualmixer.core.keys import Key
    from visualmixer.core.mixing import mix
    from visualmixer.eval.attacks.a9_unmix import thread_regions

    # sources told apart by their values (what survives the in-region shuffle): each image one level
    # with a little texture, two classes of eight, mixed in balanced groups of four
    g = torch.Generator().manual_seed(0)
    level = torch.randperm(16, generator=g)[:16].mul(15).view(16, 1, 1, 1)
    x = (level + torch.randint(0, 3, (16, 1, 16, 16), generator=g)).to(torch.uint8)
    y = torch.arange(16) % 2
    key = Key.from_seed(5)
    res = mix(x, y, key=key, ids=range(16), k=4, target_vfe=0.5, balanced=True)
    centre = 2 * 4 + 2
    seed = res.sources[:, centre]
    main_share = float((res.sources == torch.mode(res.sources, dim=1).values[:, None]).float().mean())
    assert main_share < 0.5  # the collages really are mixtures
    for pools in ([row[row >= 0] for row in res.groups.members], [torch.nonzero(y == c).flatten() for c in (0, 1)]):
        threaded, chosen = thread_regions(res.images, pools, 4)
        assert bool((res.sources.gather(0, chosen) == seed[:, None]).all())  # every thread is one source
        assert bool((y[chosen] == y[:, None]).all())
        # its regions are that source's regions, shuffled inside: the same values as the source's
        assert torch.equal(threaded.flatten(1).sort(1).values, x[seed].flatten(1).sort(1).values)


def test_a9_runs_in_the_audit_for_mixed_releases_only():
    cfg = AuditConfig(epochs=1, width=8, a3_epochs=1, a3_base=4, progress=False)
    data = _data()
    r, _ = R._audit_method(cfg, parse_method("visualmixer:0.5/mix2"), data, None, 4, {"A3", "A9"})
    assert "A9" in r["attacks"] and 0.0 <= r["a9_relinked_from_main"] <= 1.0
    r, _ = R._audit_method(cfg, parse_method("visualmixer:0.5"), data, None, 4, {"A3", "A9"})
    assert "A9" not in r["attacks"]


def test_cli_audit_passes_the_a3_strength_flags(tmp_path, monkeypatch):
    import visualmixer.eval.report as report
    from visualmixer.cli import main

    seen = {}

    def fake_audit(out, cfg, *, log=print):
        seen["cfg"] = cfg
        return tmp_path / "index.html"

    monkeypatch.setattr(report, "audit", fake_audit)
    rc = main(["audit", "--out", str(tmp_path), "--full", "--data", "faces", "--attacker", "3000", "--a3-base", "16",
               "--a3-epochs", "3", "--a3-patience", "1", "--a10-releases", "4", "-q"])
    cfg = seen["cfg"]
    assert rc == 0 and (cfg.n_attacker, cfg.a3_base, cfg.a3_epochs, cfg.a3_patience) == (3000, 16, 3, 1)
    assert cfg.a10_releases == 4
    assert cfg.attacker_strength == "custom attacker (3000 own images, U-Net width 16, at most 3 epochs)"


def test_a10_runs_for_online_mixing_only_and_follows_the_regions():
    cfg = AuditConfig(epochs=1, width=8, a3_epochs=1, a3_base=4, progress=False, a10_releases=8)
    data = _data()
    r, pic = R._audit_method(cfg, parse_method("visualmixer:0.5/mix2/online"), data, None, 4, {"A10"})
    assert "A10" in r["attacks"] and r["a10_releases"] == 8 and "A10" in pic
    # the grid shows, beside A10's estimates, the originals they followed (not the main sources)
    assert list(pic) == ["original", "protected", "A10 target", "A10"]
    victims = data.victim_images.flatten(1)
    assert all((victims == t.flatten()).all(1).any() for t in pic["A10 target"])
    # random pairs, new every epoch: eight releases re-link most regions to the region followed
    assert r["a10_regions_right"] > 0.6, r["a10_regions_right"]
    # edge regions (18 = 4 x 4 + 2): A10's grid of full regions mapped onto the sources' grid
    r, _ = R._audit_method(cfg, parse_method("visualmixer:0.5/mix2/online"), _data(size=18), None, 4, {"A10"})
    assert r["a10_regions_right"] > 0.6, r["a10_regions_right"]
    for spec in ("visualmixer:0.5/mix2", "visualmixer:0.5/online"):  # one release / no mixing
        r, _ = R._audit_method(cfg, parse_method(spec), data, None, 4, {"A10"})
        assert "A10" not in r["attacks"] and "a10_releases" not in r


def test_an_attack_names_the_victims_its_estimates_reconstruct():
    from visualmixer.eval.attacks.registry import Attack, register_attack, unregister_attack

    class Oracle(Attack):  # scoring check only: returns the victims in its own order
        name, title = "A-oracle", "test"
        needs = frozenset({"protected", "held_originals"})

        def run(self, ctx):
            order = torch.arange(ctx.held_originals.shape[0]).flip(0)
            ctx.targets[self.name] = order
            return {self.name: ctx.held_originals[order].float() / 255}

    register_attack(Oracle)
    try:
        cfg = AuditConfig(epochs=1, width=8, a3_epochs=1, a3_base=4, progress=False)
        r, _ = R._audit_method(cfg, parse_method("visualmixer:0.5/mix2"), _data(), None, 4, {"A-oracle"})
    finally:
        unregister_attack("A-oracle")
    scores = r["attacks"]["A-oracle"]
    assert scores["ssim"]["mean"] > 0.999 and scores["reid"]["rate"] == 1.0, scores


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="Fashion-MNIST not installed")
def test_report_shows_mixed_releases_scored_against_any_source(tmp_path):
    from visualmixer.eval.report import audit

    cfg = AuditConfig(datasets=("fashion-mnist",), methods=("visualmixer:0.5/mix2",), attacks=("A2", "A3"),
                      n_train=64, n_victims=32, n_attacker=64, epochs=1, a3_epochs=1, a3_base=4, width=8,
                      examples=2, progress=False, face_detectors=())
    text = audit(tmp_path / "a", cfg, log=lambda s: None).read_text()
    assert "scored against <em>any</em> of a collage's sources" in text
    s = json.loads((tmp_path / "a" / "results.json").read_text())["datasets"]["fashion-mnist"]["methods"]
    summary = s["visualmixer:0.5/mix2"]["summary"]
    assert summary["best_reid_any_source"] >= summary["best_reid"]
    assert summary["ssim_any_source_over_prior"] is not None
    assert s["clean"]["summary"]["best_reid_any_source"] is None  # one image per release: nothing to add


def _templated(n_train=48, n_vic=48, n_att=192, k=4, size=16):
    """Like :func:`_data`, but every class is a smooth template (its layout is the class's) plus noise."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(99)
    t = torch.nn.functional.interpolate(torch.rand(k, 1, 4, 4, generator=g), size=(size, size), mode="bilinear")
    g = torch.Generator().manual_seed(0)
    m = n_train + n_vic + n_att
    labels = torch.arange(m) % k
    imgs = (t[labels] * 200 + torch.rand(m, 1, size, size, generator=g) * 55).clamp(0, 255).to(torch.uint8)
    a, b = n_train, n_train + n_vic
    return SimpleNamespace(train_images=imgs[:a], train_labels=labels[:a], victim_images=imgs[a:b],
                           victim_labels=labels[a:b], attacker_images=imgs[b:], attacker_labels=labels[b:],
                           num_classes=k)


def test_a7_then_a3_inverts_the_key_wide_layout_moved_back():
    # A3 learns the attacker's own /keyblocks layout, not the owner's; A7 finds the owner's, and a
    # U-Net trained on the method without the moves inverts the regions moved back
    cfg = AuditConfig(epochs=1, width=8, a3_epochs=20, a3_base=4, progress=False)
    data = _templated()
    r, pic = R._audit_method(cfg, parse_method("visualmixer:0.5/r4/keyblocks", seed=0), data, None, 4, {"A3", "A7"})
    assert {"A3", "A7", "A7-image", "A7+A3"} <= set(r["attacks"]) and "A7+A3" in pic
    a3, a7a3 = r["attacks"]["A3"]["ssim"]["mean"], r["attacks"]["A7+A3"]["ssim"]["mean"]
    assert a7a3 > a3 + 0.2, (a3, a7a3)
    # only where regions move, and only with A3 selected
    cfg = AuditConfig(epochs=1, width=8, a3_epochs=1, a3_base=4, progress=False)
    r, _ = R._audit_method(cfg, parse_method("visualmixer:0.5/r4", seed=0), data, None, 4, {"A3", "A7"})
    assert "A7+A3" not in r["attacks"] and "A7-image" in r["attacks"]
    r, _ = R._audit_method(cfg, parse_method("visualmixer:0.5/r4/keyblocks", seed=0), data, None, 4, {"A7"})
    assert "A7+A3" not in r["attacks"]


def test_a8_and_a9_on_mixed_releases_with_partial_edge_regions():
    # 18 px, region 4: the sources number 5 x 5 regions, the attacks work on the 4 x 4 full ones
    cfg = AuditConfig(epochs=1, width=8, a3_epochs=1, a3_base=4, progress=False)
    r, _ = R._audit_method(cfg, parse_method("visualmixer:0.5/mix2", seed=0), _data(size=18), None, 4, {"A8", "A9"})
    assert r["A8"]["region_link_rate"] > 0.9 and "A9" in r["attacks"]


def test_a9_scores_each_relinked_region_against_its_own_positions_source():
    from visualmixer.core.imageops import to_float
    from visualmixer.eval.attacks.registry import AttackContext
    from visualmixer.eval.attacks.standard import Unmixing

    data = _data(n_vic=40, size=18)
    x, y = data.victim_images, data.victim_labels
    method = parse_method("visualmixer:0.0/mix2", seed=0)
    released = method.protect_set(x, y)
    main = method.last_main
    ctx = AttackContext(method=method, protected=released, region=4, labels=y, attacker_images=data.attacker_images,
                        estimates={"A3": to_float(x[main])}, sources=method.last_sources,
                        cache={"unmixed_inversion": to_float})  # a perfect guide; no U-Net needed to score
    Unmixing().run(ctx)
    # guided by the main sources themselves, nearly every full region is re-linked to its main source
    assert ctx.record["a9_relinked_from_main"] > 0.95, ctx.record
    assert ctx.record["a9_main_share_before"] < 0.8


def test_a11_is_registered_for_mixed_releases_only():
    from visualmixer.eval.attacks.registry import attack_names, get_attack, reconstructing_attacks

    a11 = get_attack("A11")
    assert "A11" in attack_names() and a11.title == "threading" and a11.reconstructs
    assert a11.needs == get_attack("A9").needs
    for spec in ("visualmixer:0.5/mix2", "visualmixer:0.5/mix4/online"):
        assert a11.applies_to(parse_method(spec)), spec
    for spec in ("visualmixer:0.5", "visualmixer:0.5/online", "noise:0.1", "clean"):
        assert not a11.applies_to(parse_method(spec)), spec
    assert reconstructing_attacks(("A11",), parse_method("visualmixer:0.5")) == []


def _leveled(n=16, size=16):
    """Images told apart by their values (what the in-region shuffle keeps): one level each, a
    little texture; two classes."""
    g = torch.Generator().manual_seed(0)
    level = torch.randperm(n, generator=g).mul(15).view(n, 1, 1, 1)
    return (level + torch.randint(0, 3, (n, 1, size, size), generator=g)).to(torch.uint8), torch.arange(n) % 2


@pytest.mark.parametrize("size", [16, 18])
def test_a11_threads_follow_the_source_of_their_centre_region(size):
    from visualmixer.core.imageops import to_float
    from visualmixer.eval.attacks.registry import AttackContext
    from visualmixer.eval.attacks.standard import Threading

    x, y = _leveled(size=size)
    method = parse_method("visualmixer:0.5/mix4/balanced", seed=0)
    released = method.protect_set(x, y)
    sources = method.last_sources
    main_share = float((sources == method.last_main[:, None]).double().mean())
    assert main_share < 0.6  # the collages really are mixtures: the main source is not the target
    ctx = AttackContext(method=method, protected=released, region=4, labels=y, attacker_images=x,
                        sources=sources, cache={"unmixed_inversion": to_float})  # no U-Net needed to score
    est = Threading().run(ctx)["A11"]
    # the centre full region (2, 2) of the 4 x 4 full grid; the sources number 5 x 5 regions at 18 px
    centre = 2 * -(-size // 4) + 2
    assert torch.equal(ctx.targets["A11"], sources[:, centre])
    # sorted values identify each region's source, so every thread is exactly one source
    assert ctx.record["a11_thread_purity"] == 1.0, ctx.record
    full = (size // 4) * 4
    got = (est[..., :full, :full] * 255).round().flatten(1).sort(1).values
    want = x[sources[:, centre]][..., :full, :full].float().flatten(1).sort(1).values
    assert torch.equal(got, want)
    # without the ground truth nothing is targeted (scored as the others) and no purity recorded
    ctx = AttackContext(method=method, protected=released, region=4, labels=y, attacker_images=x,
                        cache={"unmixed_inversion": to_float})
    Threading().run(ctx)
    assert "A11" not in ctx.targets and "a11_thread_purity" not in ctx.record


def test_a11_runs_in_the_audit_for_mixed_releases_only():
    cfg = AuditConfig(epochs=1, width=8, a3_epochs=1, a3_base=4, progress=False)
    data = _data(size=18)  # edge regions too
    r, pic = R._audit_method(cfg, parse_method("visualmixer:0.5/mix2", seed=0), data, None, 4, {"A11"})
    assert "A11" in r["attacks"] and 0.0 <= r["a11_thread_purity"] <= 1.0
    assert 0.0 <= r["attacks"]["A11"]["reid"]["rate"] <= 1.0 and r["attacks"]["A11"]["ssim"]["mean"] > 0.0
    # scored against (and pictured beside) the sources the threads started from, each one of the victims
    assert list(pic) == ["original", "protected", "A11 target", "A11"]
    victims = data.victim_images.flatten(1)
    assert all((victims == t.flatten()).all(1).any() for t in pic["A11 target"])
    r, _ = R._audit_method(cfg, parse_method("visualmixer:0.5", seed=0), data, None, 4, {"A11"})
    assert "A11" not in r["attacks"] and "a11_thread_purity" not in r
