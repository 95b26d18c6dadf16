"""Mixing only a share of the regions (``mix(..., share=S)``, ``--mix-share S``, ``/shareS``):
exact restore, share 1 unchanged, the exchanged share, errors, and the plumbing (tools, train,
audit spec, FL)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from visualmixer.cli import main
from visualmixer.core.keys import Key
from visualmixer.core.mixing import MixGroups, exchanged_positions, make_groups, mix, region_sources, unmix
from visualmixer.tools import imageio as vio
from visualmixer.tools.manifest import Manifest

try:
    from _vm_files import class_folders
except ImportError:  # tests/ as a package
    from ._vm_files import class_folders

SHARE_ERROR = r"share must be a number in \(0, 1\]"


def _set(n: int = 48, classes: int = 3, seed: int = 0, size: int = 28):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    return x, torch.arange(n) % classes


def test_share_one_gives_the_same_bytes_as_a_call_without_share():
    x, y = _set()
    key = Key.from_seed(3)
    for grouping in ("random", "similar"):
        before = mix(x, y, key=key, ids=range(48), k=4, grouping=grouping)
        now = mix(x, y, key=key, ids=range(48), k=4, grouping=grouping, share=1.0)
        assert torch.equal(before.images, now.images) and torch.equal(before.sources, now.sources)
        assert before.plans.to_dict() == now.plans.to_dict()
        rec = now.groups.to_dict()
        assert rec == before.groups.to_dict() and "share" not in rec and rec["version"] == 1


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("share", [0.02, 0.25, 0.5, 0.9, 1.0])
def test_unmix_restores_exactly_for_every_share(k, share):
    x, y = _set(seed=k)
    key = Key.from_seed(k)
    res = mix(x, y, key=key, ids=range(48), k=k, share=share)
    assert res.groups.share == share
    again = MixGroups.from_dict(json.loads(json.dumps(res.groups.to_dict())))  # through a manifest
    assert again.share == share
    assert torch.equal(unmix(res.images, again, res.plans, key=key, ids=range(48)), x)
    # the wrong share does not restore (the share is part of the secret record)
    if share != 1.0:
        wrong = MixGroups(again.members, again.region, again.k, again.grouping)
        assert not torch.equal(unmix(res.images, wrong, res.plans, key=key, ids=range(48)), x)


@pytest.mark.parametrize("share", [0.01, 0.3, 0.5, 0.99])
def test_exactly_the_rounded_share_of_positions_is_exchanged_per_group(share):
    x, y = _set(n=40, classes=2)
    key = Key.from_seed(1)
    res = mix(x, y, key=key, ids=range(40), k=4, share=share)
    regions = 7 * 7
    moved = exchanged_positions(res.groups, key=key, ids=range(40), regions=regions)
    want = max(1, math.floor(share * regions + 0.5))
    assert moved.shape == (res.groups.members.shape[0], regions)
    assert (moved.sum(dim=1) == want).all()
    # elsewhere every member keeps its own region, before and after the in-region shuffle
    own = res.sources == torch.arange(40).view(-1, 1)
    for g, row in enumerate(res.groups.members.tolist()):
        members = [i for i in row if i >= 0]
        assert own[members][:, ~moved[g]].all()


def test_the_exchanged_share_is_close_to_share_over_many_positions():
    """Statistical: 2,000 groups of 4 at 49 positions; the chosen positions are spread evenly
    (each position chosen in about ``share`` of the groups) and the share of regions that stay
    with their own image is about ``(1 - s) + s / 4``."""
    n, k, s, regions = 8000, 4, 0.3, 49
    y = torch.zeros(n, dtype=torch.long)
    key = Key.from_seed(7)
    groups = make_groups(y, key=key, ids=range(n), k=k, region=4, height=28, width=28, share=s)
    g = groups.members.shape[0]
    assert g == n // k and (groups.sizes == k).all()
    moved = exchanged_positions(groups, key=key, ids=range(n), regions=regions)
    per_position = moved.float().mean(dim=0)  # (R,) share of the groups exchanging each position
    want = round(s * regions) / regions
    sigma = math.sqrt(want * (1 - want) / g)
    assert (per_position - want).abs().max() < 5 * sigma
    assert len({tuple(r) for r in moved.tolist()}) > 0.99 * g  # positions differ between groups
    src = region_sources(groups, key=key, ids=range(n), height=28, width=28)
    kept = (src == torch.arange(n).view(-1, 1)).float().mean()
    expect = (1 - want) + want / k
    assert abs(float(kept) - expect) < 5 * math.sqrt(expect * (1 - expect) / (n * regions)) + 0.002


@pytest.mark.parametrize("bad", [0, 0.0, 1.5, -0.5, float("nan"), float("inf"), "0.5", None, True])
def test_bad_share_is_refused_naming_share(bad):
    x, y = _set(n=12)
    key = Key.from_seed(0)
    with pytest.raises(ValueError, match=SHARE_ERROR):
        mix(x, y, key=key, ids=range(12), k=2, share=bad)
    with pytest.raises(ValueError, match=SHARE_ERROR):
        make_groups(y, key=key, ids=range(12), k=2, images=x, share=bad)


def test_groups_carry_their_share_and_old_records_read_as_one():
    x, y = _set(n=24)
    key = Key.from_seed(2)
    half = make_groups(y, key=key, ids=range(24), k=2, images=x, share=0.5)
    a = mix(x, y, key=key, ids=range(24), k=2, groups=half)  # the groups' share is used
    b = mix(x, y, key=key, ids=range(24), k=2, share=0.5)
    assert torch.equal(a.images, b.images)
    with pytest.raises(ValueError, match="share=0.25 differs"):
        mix(x, y, key=key, ids=range(24), k=2, groups=half, share=0.25)
    rec = half.to_dict()
    assert rec["share"] == 0.5 and rec["version"] == 2
    old = {k: v for k, v in rec.items() if k != "share"}
    old["version"] = 1
    assert MixGroups.from_dict(old).share == 1.0
    with pytest.raises(ValueError, match="format version 5"):  # a later release's record is refused
        MixGroups.from_dict({**rec, "version": 5})


# --- the folder tool -----------------------------------------------------------------------

def test_cli_mix_share_round_trip_and_resume_refusal(tmp_path, capsys, class_tree):
    t = class_tree
    key, src, ids, dst, man, common = t.key, t.src, t.ids, t.dst, t.man, t.common
    assert main(["obfuscate", str(src), str(dst), *common, "--mix-share", "0.5"]) == 0
    header = json.loads(man.read_text().splitlines()[0])
    assert header["options"]["mix_share"] == 0.5
    done = Manifest.read(man).done()
    assert len(done) == len(ids) and all(r["mix"]["share"] == 0.5 for r in done)
    back = tmp_path / "back"
    assert main(["restore", str(dst), str(back), "--key", str(key), "-q", "--manifest", str(man)]) == 0
    for i in ids:
        assert np.array_equal(vio.read_image(back / i).numpy(), vio.read_image(src / i).numpy()), i
    # a rerun with the same share resumes (nothing to do); another share is refused, both values named
    assert main(["obfuscate", str(src), str(dst), *common, "--mix-share", "0.5"]) == 0
    capsys.readouterr()
    assert main(["obfuscate", str(src), str(dst), *common, "--mix-share", "0.25"]) == 2
    err = capsys.readouterr().err
    assert "made with --mix-share 0.5" in err and "asks for --mix-share 0.25" in err
    assert main(["obfuscate", str(src), str(dst), *common]) == 2  # no flag: share 1
    err = capsys.readouterr().err
    assert "--mix-share 0.5" in err and "--mix-share 1.0" in err
    # a run without the flag records no share (its manifest is what it was before the share)
    plain_man = tmp_path / "p.jsonl"
    assert main(["obfuscate", str(src), str(tmp_path / "p"), "--key", str(key), "-q", "--mix", "2",
                 "--manifest", str(plain_man)]) == 0
    assert "mix_share" not in json.loads(plain_man.read_text().splitlines()[0])["options"]
    assert all("share" not in r["mix"] for r in Manifest.read(plain_man).done())


@pytest.mark.parametrize("value", ["0", "1.5", "nan", "half"])
def test_cli_bad_mix_share_names_the_flag(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exc:
        main(["obfuscate", str(tmp_path), str(tmp_path / "d"), "--key", "k", "--mix", "2", "--mix-share", value])
    assert exc.value.code == 2
    assert "--mix-share" in capsys.readouterr().err


def test_cli_mix_share_needs_mix(tmp_path, capsys):
    key = tmp_path / "k.key"
    assert main(["keygen", str(key), "-q"]) == 0
    src = tmp_path / "src"
    class_folders(src, {"cat": 2, "dog": 2})
    assert main(["obfuscate", str(src), str(tmp_path / "d"), "--key", str(key), "-q", "--mix-share", "0.5"]) == 2
    assert "--mix-share 0.5 needs --mix K" in capsys.readouterr().err


# --- audit spec, training, FL --------------------------------------------------------------

def test_spec_parsing():
    from visualmixer.eval.methods import parse_method

    m = parse_method("visualmixer:0.5/mix4/share0.5", seed=0)
    assert m.share == 0.5 and m.mix == 4 and m.param_text() == "0.5/mix4/share0.5"
    assert parse_method("visualmixer:0.5/mix4/similar/share0.25", seed=0).param_text() == "0.5/mix4/similar/share0.25"
    assert parse_method("visualmixer:0.5/mix4", seed=0).share == 1.0
    assert parse_method("visualmixer:0.5/mix4/share1", seed=0).param_text() == "0.5/mix4"
    x, y = _set(n=40, classes=2)
    m.protect_set(x, y)
    kept = float((m.last_sources == torch.arange(40).view(-1, 1)).float().mean())
    assert 0.55 < kept < 0.7  # (1 - 0.5) + 0.5 / 4 = 0.625 of the regions stay home
    assert m.records(28, 28)["mix_share"] == 0.5
    for bad, match in [("visualmixer:0.5/mix4/share0", r"\(0, 1\]"), ("visualmixer:0.5/mix4/share2", r"\(0, 1\]"),
                       ("visualmixer:0.5/share0.5", "add /mixK"), ("visualmixer:0.5/mix4/sharex", "/shareS")]:
        with pytest.raises(ValueError, match=match):
            parse_method(bad)


def test_train_config_and_cli_pass_the_share(tmp_path, monkeypatch, mix_calls):
    from test_train import _cfg, _synthetic
    from visualmixer.train import loop as L

    with pytest.raises(ValueError, match=r"mix_share must be a number in \(0, 1\]"):
        _cfg(tmp_path, mix=2, mix_share=1.5).validate()
    with pytest.raises(ValueError, match="mix_share=0.5 needs mix"):
        _cfg(tmp_path, mix_share=0.5).validate()
    with pytest.raises(ValueError, match="mix_grouping='similar' needs mix"):
        _cfg(tmp_path, mix_grouping="similar").validate()
    for k in (1, 2.5, True):
        with pytest.raises(ValueError, match=f"mix={k} is not allowed"):
            _cfg(tmp_path, mix=k).validate()
    for region in (0, "4", 300):
        with pytest.raises(ValueError, match=f"region={region} is not allowed"):
            _cfg(tmp_path, region=region).validate()
    sets = (_synthetic(64, 0), _synthetic(16, 1))
    calls = mix_calls(L)
    monkeypatch.setattr(L, "load_sets", lambda cfg: sets)
    assert main(["train", "--mix", "2", "--mix-share", "0.5", "--epochs", "1", "--batch-size", "32",
                 "--no-progress", "--out", str(tmp_path / "cli")]) == 0
    assert [c["share"] for c in calls] == [0.5]
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["config"]["mix_share"] == 0.5


@pytest.mark.filterwarnings("ignore:online mixing with random groups")
def test_online_training_remixes_with_the_share(tmp_path, mix_calls):
    from test_train import _cfg, _synthetic
    from visualmixer.train import feed
    from visualmixer.train import loop as L

    calls = mix_calls(feed)
    L.train(_cfg(tmp_path / "o", mix=2, mix_share=0.25, mode="online", epochs=2),
            sets=(_synthetic(64, 0), _synthetic(16, 1)))
    assert [c["share"] for c in calls] == [0.25, 0.25]


def test_fl_run_config_share():
    from visualmixer.fl import task

    cfg = task.FLConfig.from_run_config({"mix": 4, "mix-share": 0.5})
    assert cfg.mix_share == 0.5
    assert task.FLConfig.from_run_config({"mix": 4}).mix_share == 1.0
    with pytest.raises(ValueError, match=r"mix_share must be a number in \(0, 1\]"):
        task.FLConfig.from_run_config({"mix": 4, "mix-share": 0.0})
    x, y = _set(n=16, classes=2)
    key = Key.from_seed(0)
    out = task.obfuscate_local(x, np.arange(16), cfg, key, 1, labels=y)
    ref = mix(x, y, key=key, ids=list(range(16)), k=4, target_vfe=0.5, share=0.5).images
    assert torch.equal(out, ref)
