"""`visualmixer train --mix K`: the training set protected as a whole by keyed region mixing."""

import json
import warnings

import pytest
import torch

from test_train import _cfg, _synthetic
from visualmixer.cli import main
from visualmixer.core.keys import Key
from visualmixer.core.mixing import mix
from visualmixer.train import loop as L


@pytest.fixture(scope="module")
def sets():
    return _synthetic(96, 0), _synthetic(32, 1)


def test_offline_mix_trains_on_the_mixed_release(tmp_path, sets, monkeypatch):
    seen = []
    real = L.mix

    def spy(images, labels, **kw):
        seen.append((images.shape[0], kw["k"], kw["grouping"]))
        return real(images, labels, **kw)

    monkeypatch.setattr(L, "mix", spy)
    res = L.train(_cfg(tmp_path / "m", mix=2, mix_grouping="similar", epochs=1), sets=sets)
    assert seen == [(96, 2, "similar")]  # once, offline, for the whole training set
    run = res["runs"][0]
    assert 0.0 <= run["final_test_acc"] <= 1.0 and run["train_vfe"] >= 0.5
    assert res["config"]["mix"] == 2
    # the released set is what mix() makes with the run's key and the image indices as ids
    ref = mix(sets[0].images, sets[0].labels, key=Key.from_seed(0), ids=range(96), k=2, grouping="similar",
              target_vfe=0.5)
    assert ref.images.shape == sets[0].images.shape


@pytest.mark.filterwarnings("ignore:online mixing with random groups")
def test_online_mix_remixes_every_epoch(tmp_path, sets, monkeypatch):
    from visualmixer.train import feed

    ids_seen = []
    real = feed.mix

    def spy(images, labels, **kw):
        ids_seen.append(list(kw["ids"])[:2])
        return real(images, labels, **kw)

    monkeypatch.setattr(feed, "mix", spy)
    res = L.train(_cfg(tmp_path / "o", mix=2, mode="online", epochs=2), sets=sets)
    assert ids_seen == [[(0, 0), (1, 0)], [(0, 1), (1, 1)]]
    hist = res["runs"][0]["history"]
    assert len(hist) == 2 and all(h["train_vfe"] >= 0.5 and h["obfuscate_s"] > 0 for h in hist)


@pytest.mark.parametrize("kw, match", [({"mix": 1}, "mix=1 is not allowed: give an integer >= 2"),
                                       ({"mix": 2, "target_vfe": None}, "mix=K needs target_vfe=T"),
                                       ({"mix": 2, "mode": "online", "loader_workers": 1}, "loader_workers=0"),
                                       ({"mix_grouping": "nearest"}, "mix_grouping must be")])
def test_mix_options_are_checked(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(tmp_path, **kw).validate()


def test_cli_train_mix_flag(tmp_path, sets, monkeypatch, capsys):
    monkeypatch.setattr(L, "load_sets", lambda cfg: sets)
    rc = main(["train", "--mix", "2", "--groups", "random", "--epochs", "1", "--batch-size", "32",
               "--no-progress", "--out", str(tmp_path / "cli")])
    assert rc == 0
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert metrics["config"]["mix"] == 2 and metrics["config"]["mix_grouping"] == "random"
    assert torch.isfinite(torch.tensor(metrics["runs"][0]["final_test_acc"]))


def test_online_mixing_with_random_groups_warns(tmp_path):
    """Random groups renewed every epoch are undone by intersecting epochs (A10): say so."""
    base = dict(data="synthetic", target_vfe=0.5, mix=2, out=str(tmp_path), progress=False)
    with pytest.warns(UserWarning, match="A10"):
        L.TrainConfig(mode="online", mix_grouping="random", **base).validate()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L.TrainConfig(mode="online", mix_grouping="similar", **base).validate()
        L.TrainConfig(mode="offline", mix_grouping="random", **base).validate()


def test_cli_says_the_warning_once_with_flags(tmp_path, sets, monkeypatch, capsys):
    monkeypatch.setattr(L, "load_sets", lambda cfg: sets)
    rc = main(["train", "--mix", "2", "--groups", "random", "--mode", "online", "--epochs", "1",
               "--batch-size", "32", "--no-progress", "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert rc == 0 and err.count("visualmixer train: warning:") == 1
    assert "use --groups similar or --mode offline" in err and "mix_grouping" not in err


def test_a_class_of_one_training_image_is_said_to_stay_unmixed(tmp_path, sets):
    from visualmixer.data.datasets import ImageSet

    train, test = sets
    keep = torch.cat([torch.nonzero(train.labels != 3).flatten(), torch.nonzero(train.labels == 3).flatten()[:1]])
    lone = ImageSet(train.images[keep], train.labels[keep], train.classes, "synth")
    with pytest.warns(UserWarning, match=r"mix=2: 1 class\(es\) have a single training image \(d\)"):
        L.train(_cfg(tmp_path / "m", mix=2, epochs=1), sets=(lone, test))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L.train(_cfg(tmp_path / "n", mix=2, epochs=1), sets=sets)  # every class has several: no warning
