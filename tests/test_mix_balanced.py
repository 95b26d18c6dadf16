"""Balanced mixing (``mix(..., balanced=True)``, ``--mix-balanced``, ``/balanced``): exact restore,
every collage holds each member's regions equally often, the record, errors, and the plumbing
(tools, train, audit spec, FL)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from visualmixer.cli import main
from visualmixer.core.keys import Key
from visualmixer.core.mixing import MixGroups, make_groups, mix, region_sources, unmix
from visualmixer.tools import imageio as vio
from visualmixer.tools.manifest import Manifest


def _set(n: int = 60, classes: int = 3, seed: int = 0, size: int = 28):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    return x, torch.arange(n) % classes


def _counts(sources: torch.Tensor, members: torch.Tensor) -> list[list[int]]:
    """For every collage of every group: how many of its regions come from each member."""
    out = []
    for row in members.tolist():  # bookkeeping over a few groups
        ids = [i for i in row if i >= 0]
        for c in ids:
            out.append([int((sources[c] == s).sum()) for s in ids])
    return out


@pytest.mark.parametrize("k", [2, 4, 8])
def test_balanced_mixing_restores_exactly_and_deals_every_member_equally(k):
    x, y = _set()
    key = Key.from_seed(1)
    res = mix(x, y, key=key, ids=range(60), k=k, balanced=True)
    assert res.groups.balanced
    assert torch.equal(unmix(res.images, res.groups, res.plans, key=key, ids=range(60)), x)
    regions = res.sources.shape[1]  # 49 for 28² images and 4-px regions
    for row in _counts(res.sources, res.groups.members):
        v = len(row)  # members of the group (k to 2k - 1 with the remainder)
        assert set(row) <= {regions // v, -(-regions // v)}, row
    # the independent assignment gives uneven counts (the main source holds more)
    free = mix(x, y, key=key, ids=range(60), k=k)
    uneven = [max(r) - min(r) for r in _counts(free.sources, free.groups.members)]
    assert max(uneven) > 1 and not torch.equal(free.images, res.images)


def test_the_record_carries_balanced_and_old_records_read_as_unbalanced():
    x, y = _set(n=24, classes=2)
    key = Key.from_seed(0)
    groups = make_groups(y, key=key, ids=range(24), k=4, images=x, balanced=True)
    rec = groups.to_dict()
    assert rec["balanced"] is True and rec["version"] == 4 and rec["design"] == "switched"
    back = MixGroups.from_dict(json.loads(json.dumps(rec)))
    assert back.balanced and torch.equal(back.members, groups.members)
    a = mix(x, y, key=key, ids=range(24), k=4, groups=back)  # the groups' assignment is used
    b = mix(x, y, key=key, ids=range(24), k=4, balanced=True)
    assert torch.equal(a.images, b.images)
    plain = make_groups(y, key=key, ids=range(24), k=4, images=x)
    assert "balanced" not in plain.to_dict() and plain.to_dict()["version"] == 1
    old = {k: v for k, v in rec.items() if k not in ("balanced", "design")}
    assert MixGroups.from_dict({**old, "version": 1}).balanced is False
    # the wrong assignment does not restore (it is part of the secret record)
    assert not torch.equal(unmix(b.images, plain, b.plans, key=key, ids=range(24)), x)
    with pytest.raises(ValueError, match="balanced=True but the groups passed were made without it"):
        mix(x, y, key=key, ids=range(24), k=4, groups=plain, balanced=True)
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="balanced must be True or False"):
            mix(x, y, key=key, ids=range(24), k=4, balanced=bad)
    with pytest.raises(ValueError, match="balanced must be True or False"):
        MixGroups(groups.members, 4, 4, balanced="yes")
    with pytest.raises(ValueError, match="balanced must be True or False"):  # a damaged record is refused
        MixGroups.from_dict({**rec, "balanced": "false"})


def test_balanced_with_a_share_exchanges_only_the_share():
    x, y = _set(n=40, classes=2)
    key = Key.from_seed(2)
    res = mix(x, y, key=key, ids=range(40), k=4, share=0.5, balanced=True)
    assert torch.equal(unmix(res.images, res.groups, res.plans, key=key, ids=range(40)), x)
    assert res.groups.to_dict()["version"] == 4 and res.groups.to_dict()["share"] == 0.5
    home = float((res.sources == torch.arange(40).view(-1, 1)).float().mean())
    assert 0.55 < home < 0.7  # (1 - 0.5) + 0.5 / 4 of the regions stay home
    sources = region_sources(res.groups, key=key, ids=range(40), height=28, width=28)
    assert torch.equal(sources, res.sources)


# --- the folder tool, train, the audit spec, FL -------------------------------------------------

def test_cli_mix_balanced_round_trip_and_resume_refusal(tmp_path, capsys, class_tree):
    t = class_tree
    key, src, ids, dst, man, common = t.key, t.src, t.ids, t.dst, t.man, t.common
    assert main(["obfuscate", str(src), str(dst), *common, "--mix-balanced"]) == 0
    assert json.loads(man.read_text().splitlines()[0])["options"]["mix_balanced"] is True
    done = Manifest.read(man).done()
    assert len(done) == len(ids) and all(r["mix"]["balanced"] is True for r in done)
    back = tmp_path / "back"
    assert main(["restore", str(dst), str(back), "--key", str(key), "-q", "--manifest", str(man)]) == 0
    for i in ids:
        assert np.array_equal(vio.read_image(back / i).numpy(), vio.read_image(src / i).numpy()), i
    assert main(["obfuscate", str(src), str(dst), *common, "--mix-balanced"]) == 0  # resumes: nothing to do
    capsys.readouterr()
    assert main(["obfuscate", str(src), str(dst), *common]) == 2  # without the flag: refused, flag named
    assert "--mix-balanced" in capsys.readouterr().err
    assert main(["obfuscate", str(src), str(tmp_path / "d2"), "--key", str(key), "-q", "--mix-balanced"]) == 2
    assert "--mix-balanced needs --mix K" in capsys.readouterr().err


def test_spec_parsing():
    from visualmixer.eval.methods import parse_method

    m = parse_method("visualmixer:1.0/mix8/balanced", seed=0)
    assert m.balanced and m.mix == 8 and m.param_text() == "1/mix8/balanced"
    assert parse_method("visualmixer:0.5/mix4", seed=0).balanced is False
    x, y = _set(n=48, classes=2)
    m.protect_set(x, y)
    share = float((m.last_sources == m.last_main.view(-1, 1)).float().mean())
    assert share < 0.2  # every member at 6 or 7 of the 49 positions: the main source at most 7
    assert m.records(28, 28)["mix_balanced"] is True
    with pytest.raises(ValueError, match="add /mixK"):
        parse_method("visualmixer:0.5/balanced")


def test_train_config_and_cli_pass_balanced(tmp_path, monkeypatch, mix_calls):
    from test_train import _cfg, _synthetic
    from visualmixer.train import loop as L

    with pytest.raises(ValueError, match="mix_balanced=True needs mix"):
        _cfg(tmp_path, mix_balanced=True).validate()
    with pytest.raises(ValueError, match="mix_balanced must be True or False"):
        _cfg(tmp_path, mix=2, mix_balanced="yes").validate()
    calls = mix_calls(L)
    monkeypatch.setattr(L, "load_sets", lambda cfg: (_synthetic(64, 0), _synthetic(16, 1)))
    assert main(["train", "--mix", "2", "--mix-balanced", "--epochs", "1", "--batch-size", "32",
                 "--no-progress", "--out", str(tmp_path / "cli")]) == 0
    assert [c["balanced"] for c in calls] == [True]
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["config"]["mix_balanced"] is True


def test_fl_run_config_balanced():
    from visualmixer.fl import task

    cfg = task.FLConfig.from_run_config({"mix": 4, "mix-balanced": True})
    assert cfg.mix_balanced is True
    assert task.FLConfig.from_run_config({"mix": 4}).mix_balanced is False
    with pytest.raises(ValueError, match="mix_balanced needs mix"):
        task.FLConfig.from_run_config({"mix-balanced": True})
    x, y = _set(n=16, classes=2)
    key = Key.from_seed(0)
    out = task.obfuscate_local(x, np.arange(16), cfg, key, 1, labels=y)
    ref = mix(x, y, key=key, ids=list(range(16)), k=4, target_vfe=0.5, balanced=True).images
    assert torch.equal(out, ref)
