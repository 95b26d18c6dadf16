"""How balanced groups are dealt (:mod:`visualmixer.core.mixdeal`): the switched deal keeps the
balance exactly, shares no cycle across positions, depends on nothing but the group, and records
of the cyclic deal (format version 3) keep unmixing bit-exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from visualmixer.core.keys import Key
from visualmixer.core.mixdeal import cyclic_deal, mix64, switched_deal
from visualmixer.core.mixer import Plans
from visualmixer.core.mixing import MixGroups, make_groups, mix, region_sources, unmix

FIXTURE = Path(__file__).parent / "fixtures" / "mix_v3" / "mix_v3.pt"


def _valid(sizes: list[int]) -> torch.Tensor:
    m = max(sizes)
    return torch.arange(m).view(1, -1) < torch.tensor(sizes).view(-1, 1)


def _count_matrix(deal: torch.Tensor, v: int) -> torch.Tensor:
    """``(v, v)``: positions at which collage c holds member x (one group's ``(R, M)`` deal)."""
    counts = torch.zeros(v, v, dtype=torch.long)
    cols = torch.arange(v).expand(deal.shape[0], v)
    return counts.index_put_((cols.reshape(-1), deal[:, :v].reshape(-1)), torch.ones(cols.numel(), dtype=torch.long),
                             accumulate=True)


@pytest.mark.parametrize("sizes,regions", [
    ([16, 17, 31], 49),   # R > v with a remainder (transpositions move)
    ([64, 67, 127], 49),  # R < v: a Latin rectangle
    ([7, 16, 32], 64),    # R a multiple of v: every count equal (only row switches move)
    ([49], 49),           # a Latin square
    ([2, 3, 5], 16),      # small groups
    ([13, 1], 9),         # a group of one keeps its regions
])
def test_switched_deal_is_exactly_balanced(sizes, regions):
    valid = _valid(sizes)
    seeds = mix64(torch.arange(len(sizes), dtype=torch.long) * 31 + 5)
    deal = switched_deal(seeds, valid, regions)
    m = valid.shape[1]
    assert deal.shape == (len(sizes), regions, m)
    for g, v in enumerate(sizes):
        d = deal[g]
        assert torch.equal(d[:, :v].sort(dim=1).values, torch.arange(v).expand(regions, v))  # a permutation each
        assert torch.equal(d[:, v:], torch.arange(v, m).expand(regions, m - v))  # empty slots stay
        c = _count_matrix(d, v)
        assert int(c.min()) == regions // v and int(c.max()) == -(-regions // v), (v, regions)


def test_a_groups_deal_depends_only_on_itself():
    sizes = [16, 16, 31, 20]
    valid = _valid(sizes)
    seeds = mix64(torch.arange(4, dtype=torch.long) + 100)
    together = switched_deal(seeds, valid, 49)
    for g, v in enumerate(sizes):  # alone and unpadded: the same deal
        alone = switched_deal(seeds[g:g + 1], valid[g:g + 1, :v], 49)
        assert torch.equal(alone[0], together[g, :, :v]), g
    other = switched_deal(seeds + 1, valid, 49)  # another key word: another deal
    assert not torch.equal(other, together)


def _commuting_share(deal: torch.Tensor, v: int, pairs: int = 200) -> float:
    """Share of collages where two relative permutations (position 0 -> r, 0 -> r') commute.
    Every relative permutation of the cyclic deal is a power of one cycle: they all commute."""
    g = torch.Generator().manual_seed(0)
    inv = torch.argsort(deal[:, :v], dim=1)  # [r, member] -> collage
    rel = inv.gather(1, deal[0:1, :v].expand(deal.shape[0], v))  # [r, c]: c's member at 0 sits at r in rel[r, c]
    a, b = torch.randint(1, deal.shape[0], (2, pairs), generator=g)
    ab, ba = rel[a].gather(1, rel[b]), rel[b].gather(1, rel[a])
    return float((ab == ba).float().mean())


def test_switched_deal_shares_no_cycle_across_positions():
    valid = _valid([64, 16])
    seeds = mix64(torch.tensor([3, 4]))
    cyclic, switched = cyclic_deal(seeds, valid, 49), switched_deal(seeds, valid, 49)
    for g, v in enumerate((64, 16)):
        assert _commuting_share(cyclic[g], v) == 1.0
        assert _commuting_share(switched[g], v) < 0.3, v


def test_mix_deals_switched_by_default_and_cyclic_on_request():
    n = 40
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % 2
    key = Key.from_seed(5)
    new = mix(x, y, key=key, ids=range(n), k=8, balanced=True)
    old = mix(x, y, key=key, ids=range(n), k=8, balanced=True, design="cyclic")
    assert new.groups.design == "switched" and old.groups.design == "cyclic"
    assert not torch.equal(new.sources, old.sources)
    for res in (new, old):
        assert torch.equal(unmix(res.images, res.groups, res.plans, key=key, ids=range(n)), x)
        rec = json.loads(json.dumps(res.groups.to_dict()))
        assert MixGroups.from_dict(rec).to_dict() == res.groups.to_dict()
    assert new.groups.to_dict()["version"] == 4 and old.groups.to_dict()["version"] == 3
    with pytest.raises(ValueError, match="design must be one of 'cyclic', 'switched'"):
        mix(x, y, key=key, ids=range(n), k=8, balanced=True, design="latin")
    with pytest.raises(ValueError, match="is for balanced groups"):
        make_groups(y, key=key, ids=range(n), k=8, images=x, design="cyclic")
    with pytest.raises(ValueError, match="differs from the design of the groups passed"):
        mix(x, y, key=key, ids=range(n), k=8, groups=old.groups, design="switched")
    with pytest.raises(ValueError, match="cannot hold design 'switched'"):  # a damaged record
        MixGroups.from_dict({**old.groups.to_dict(), "design": "switched"})


@pytest.mark.parametrize("case", ["k4-grey28", "k4-share", "k8-rgb32"])
def test_cyclic_releases_of_version_3_still_unmix_bit_exactly(case):
    """tests/fixtures/mix_v3: made by the cyclic deal before the switched one existed."""
    data = torch.load(FIXTURE, weights_only=True)[case]
    rec = data["groups"]
    assert rec["version"] == 3 and "design" not in rec  # as version 3 wrote it
    groups = MixGroups.from_dict(rec)
    assert groups.balanced and groups.design == "cyclic"
    key = Key.from_seed(20261129)
    h, w = data["original"].shape[-2:]
    assert torch.equal(region_sources(groups, key=key, ids=data["ids"], height=h, width=w), data["sources"])
    plans = Plans.from_dict(data["plans"])
    assert torch.equal(unmix(data["released"], groups, plans, key=key, ids=data["ids"]), data["original"])
    again = mix(data["original"], data["labels"], key=key, ids=data["ids"], groups=groups,
                k=rec["k"], target_vfe=1.0 if case == "k8-rgb32" else 0.5)
    assert torch.equal(again.images, data["released"])  # the cyclic deal itself is unchanged


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_switched_deal_same_bits_on_cuda():
    valid = _valid([64, 16, 31])
    seeds = mix64(torch.tensor([1, 2, 3]))
    cpu = switched_deal(seeds, valid, 49)
    assert torch.equal(switched_deal(seeds.cuda(), valid.cuda(), 49).cpu(), cpu)


def test_audit_spec_selects_the_design():
    from visualmixer.eval.methods import parse_method

    x = torch.randint(0, 256, (32, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(32) % 2
    runs = {}
    for spec in ("visualmixer:1.0/mix8/balanced", "visualmixer:1.0/mix8/balanced/cyclic"):
        m = parse_method(spec, seed=0)
        assert m.param_text() == spec.split(":")[1].replace("1.0", "1")
        m.protect_set(x, y)
        runs[spec] = (m.records(28, 28)["mix_design"], m.last_sources)
    (new, s_new), (old, s_old) = runs.values()
    assert (new, old) == ("switched", "cyclic") and not torch.equal(s_new, s_old)
    with pytest.raises(ValueError, match="add /balanced"):
        parse_method("visualmixer:1.0/mix8/cyclic", seed=0)


# --- the folder tool: releases of the cyclic deal (format version 3) --------------------------

def _as_version_3(monkeypatch):
    """Make the folder tool write group records as the release before the switched deal did."""
    from visualmixer.tools import mixchunks, mixrun

    def old_record(ids, **kw):
        rec = mixchunks.group_record(ids, **{**kw, "balanced": False})
        if kw.get("balanced"):
            rec.update(version=3, balanced=True)  # no "design": version 3 records are cyclic
        return rec

    monkeypatch.setattr(mixrun, "group_record", old_record)


def test_folder_run_of_version_3_resumes_without_redealing_and_restores_next_to_new_groups(
        tmp_path, monkeypatch, capsys, class_tree):
    import numpy as np
    from PIL import Image

    from visualmixer.cli import main
    from visualmixer.tools import imageio as vio
    from visualmixer.tools.manifest import Manifest

    try:
        from _vm_files import smooth_rgb
    except ImportError:  # tests/ as a package
        from ._vm_files import smooth_rgb
    t = class_tree
    with monkeypatch.context() as m:
        _as_version_3(m)
        assert main(["obfuscate", str(t.src), str(t.dst), *t.common, "--mix-balanced"]) == 0
    first = {r["id"]: r["mix"] for r in Manifest.read(t.man).done()}
    assert all(rec["version"] == 3 and "design" not in rec for rec in first.values())
    stamps = {p.name: p.stat().st_mtime_ns for p in t.dst.rglob("*.png")}
    capsys.readouterr()
    # an undisturbed resume with this release: nothing re-dealt, nothing re-written
    assert main(["obfuscate", str(t.src), str(t.dst), *t.common, "--mix-balanced"]) == 0
    assert "keep the record of the release that made them" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in t.dst.rglob("*.png")} == stamps
    assert {r["id"]: r["mix"] for r in Manifest.read(t.man).done()} == first
    # the source grows: finished cyclic groups are kept, the new images get switched groups,
    # and one restore run unmixes both kinds (they share an image size)
    new_ids = [f"cat/{i}.png" for i in range(100, 104)]
    for n, i in enumerate(new_ids):
        Image.fromarray(smooth_rgb(12, 16, 900 + n)).save(t.src / i)
    assert main(["obfuscate", str(t.src), str(t.dst), *t.common, "--mix-balanced"]) == 0
    done = {r["id"]: r["mix"] for r in Manifest.read(t.man).done()}
    assert {done[i].get("design") for i in new_ids} == {"switched"}
    assert all(done[i] == first[i] for i in first)
    back = tmp_path / "back"
    assert main(["restore", str(t.dst), str(back), "--key", str(t.key), "-q", "--manifest", str(t.man)]) == 0
    for i in [*t.ids, *new_ids]:
        assert np.array_equal(vio.read_image(back / i).numpy(), vio.read_image(t.src / i).numpy()), i


def test_records_that_cannot_be_honoured_are_refused_and_rows_with_gaps_deal_balanced():
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    key = Key.from_seed(3)
    groups = make_groups(torch.zeros(8, dtype=torch.long), key=key, ids=range(8), k=4, images=x, balanced=True)
    rec = groups.to_dict()
    with pytest.raises(ValueError, match="with balanced=true must say their design"):
        MixGroups.from_dict({k: v for k, v in rec.items() if k != "design"})  # v4 without design
    with pytest.raises(ValueError, match="design must be one of 'cyclic', 'switched'"):
        mix(x, torch.zeros(8, dtype=torch.long), key=key, ids=range(8), k=4, groups=groups, design="latin")
    # a hand-made record with empty slots between members: every member still moves, balanced
    gappy = MixGroups(torch.tensor([[0, -1, 1, 2, -1, 3], [4, 5, 6, 7, -1, -1]]), 4, 4, balanced=True)
    sources = region_sources(gappy, key=key, ids=range(8), height=28, width=28)
    for members in ([0, 1, 2, 3], [4, 5, 6, 7]):
        for c in members:
            counts = torch.bincount(sources[c], minlength=8)[members]
            assert set(counts.tolist()) <= {12, 13}, (c, counts)  # 49 positions over 4 members


def test_recommend_never_offers_the_cyclic_deal():
    from visualmixer.eval.recommend import VARIANTS

    assert "balanced" in VARIANTS and "cyclic" not in VARIANTS


def test_training_records_the_design_and_an_older_balanced_checkpoint_resumes_only_cyclic(tmp_path):
    from visualmixer.train.checkpoint import load_checkpoint
    from visualmixer.train.config import TrainConfig

    def cfg(**kw):
        c = TrainConfig(data="synthetic", model="cnn", target_vfe=0.5, epochs=2, out=str(tmp_path), progress=False,
                        mix=2, mix_balanced=True, resume=True, **kw)
        c.validate()
        return c

    assert cfg().mix_design == "switched" and cfg(mix_design="cyclic").mix_design == "cyclic"
    with pytest.raises(ValueError, match="mix_design must be one of"):
        cfg(mix_design="latin")
    with pytest.raises(ValueError, match="mix_design='cyclic' needs mix_balanced=True"):
        TrainConfig(data="synthetic", mix=2, mix_design="cyclic").validate()
    ckpt = tmp_path / "ckpt.pt"
    before = {k: v for k, v in cfg().to_dict().items() if k != "mix_design"}  # written before the design existed
    torch.save({"config": before, "epoch": 0}, ckpt)
    with pytest.raises(ValueError, match="mix_design='cyclic' \\(now 'switched'\\)"):
        load_checkpoint(cfg(), ckpt)
    assert load_checkpoint(cfg(mix_design="cyclic"), ckpt)["epoch"] == 0


def test_train_cli_passes_the_design(tmp_path, monkeypatch, capsys, mix_calls):
    from test_train import _synthetic
    from visualmixer.cli import main
    from visualmixer.train import loop as L

    calls = mix_calls(L)
    monkeypatch.setattr(L, "load_sets", lambda cfg: (_synthetic(64, 0), _synthetic(16, 1)))
    common = ["train", "--mix", "2", "--mix-balanced", "--epochs", "1", "--batch-size", "32", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--mix-design", "cyclic", "--out", str(tmp_path / "b")]) == 0
    assert [c["design"] for c in calls] == ["switched", "cyclic"]
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["config"]["mix_design"] == "cyclic"
    capsys.readouterr()
    assert main(["train", "--mix", "2", "--mix-design", "cyclic", "--out", str(tmp_path / "c")]) == 2
    assert "--mix-design cyclic needs --mix-balanced" in capsys.readouterr().err


def test_threading_can_use_the_balance():
    from visualmixer.eval.attacks.a9_unmix import thread_regions

    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 256, (8, 1, 12, 12), dtype=torch.uint8, generator=g)  # a 3 x 3 grid of 4-px regions
    res = mix(x, torch.zeros(8, dtype=torch.long), key=Key.from_seed(6), ids=range(8), k=8, balanced=True)
    pools = [torch.arange(8)]
    for balanced_visits in (False, True):
        _, chosen = thread_regions(res.images, pools, 4, balanced_visits=balanced_visits)
        visits = torch.stack([torch.bincount(row, minlength=8) for row in chosen])  # thread -> collage
        if balanced_visits:  # 9 positions over 8 collages: at most twice, like the deal itself
            assert int(visits.max()) <= 2
        assert torch.equal(chosen[:, 4], torch.arange(8))  # every thread starts at its own centre region


def test_capped_threading_counts_the_whole_grid_as_the_deal_does():
    """18 px in 4-px regions: 16 full regions but 25 dealt positions; the true threads visit a
    collage up to ceil(25 / 3) = 9 times, which a cap from the full grid alone (6) would forbid."""
    from visualmixer.eval.attacks.a9_unmix import thread_regions

    x = torch.tensor([20, 120, 230], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 18, 18).contiguous()
    res = mix(x, torch.zeros(3, dtype=torch.long), key=Key.from_seed(0), ids=range(3), k=3, balanced=True,
              target_vfe=0.0)
    full = torch.tensor([r * 5 + c for r in range(4) for c in range(4)])  # the full regions among 5 x 5
    truth = res.sources[:, full]
    start = truth[:, 10]  # where threads start: (4 // 2, 4 // 2) of the 4 x 4 full grid
    for balanced_visits in (False, True):
        _, chosen = thread_regions(res.images, [torch.arange(3)], 4, balanced_visits=balanced_visits)
        assert torch.equal(truth.gather(0, chosen), start.view(-1, 1).expand(3, 16)), balanced_visits


def test_a_version_3_record_with_an_empty_design_reads_as_cyclic():
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(9))
    rec = make_groups(torch.zeros(8, dtype=torch.long), key=Key.from_seed(1), ids=range(8), k=4, images=x,
                      balanced=True, design="cyclic").to_dict()
    assert rec["version"] == 3
    assert MixGroups.from_dict({**rec, "design": None}).design == "cyclic"


def test_balanced_folder_runs_write_a_manifest_that_earlier_releases_refuse(tmp_path, monkeypatch, class_tree):
    from visualmixer.cli import main
    from visualmixer.tools import manifest as manifest_module
    from visualmixer.tools.manifest import Manifest

    t = class_tree
    assert main(["obfuscate", str(t.src), str(t.dst), *t.common, "--mix-balanced"]) == 0
    assert json.loads(t.man.read_text().splitlines()[0])["version"] == 3
    plain = tmp_path / "plain.jsonl"
    assert main(["obfuscate", str(t.src), str(tmp_path / "d2"), "--key", str(t.key), "-q", "--mix", "2",
                 "--manifest", str(plain)]) == 0
    assert json.loads(plain.read_text().splitlines()[0])["version"] == 2
    # a release that reads versions 1 and 2 only (before the switched deal) refuses, in one line,
    # instead of resuming the run and re-dealing its finished groups cyclically
    monkeypatch.setattr(manifest_module, "READABLE_VERSIONS", frozenset({1, 2}))
    with pytest.raises(ValueError, match="version 3"):
        Manifest.read(t.man)
