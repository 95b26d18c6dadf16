"""Matching the teacher's region-grid features (`visualmixer train --soft-label-features W`)."""

import copy
import json

import numpy as np
import pytest
import torch

from test_train import _cfg, _synthetic
from visualmixer.cli import main
from visualmixer.train import loop as L
from visualmixer.train.fit import fit_classifier
from visualmixer.train.models import RegionSortedCNN, SmallCNN
from visualmixer.train.soft_labels import (
    FeatureMatchingLoss,
    features_path,
    read_soft_labels,
    release_features,
    release_logits,
    release_logits_and_features,
    soft_label_loss,
    soft_target_loss,
    write_soft_labels,
)

_BASE = dict(model="region-sorted", target_vfe=1.0, mix=2, epochs=1, soft_labels="region-sorted")


@pytest.fixture(scope="module")
def sets():
    return _synthetic(96, 0), _synthetic(32, 1)


@pytest.fixture
def models(monkeypatch):
    """Every model the training loop builds, to check its hooks afterwards."""
    built = []
    real = L.init_model

    def keep(*args, **kw):
        built.append(real(*args, **kw))
        return built[-1]

    monkeypatch.setattr(L, "init_model", keep)
    return built


def _pair(seed_teacher=0, seed_model=1):
    torch.manual_seed(seed_teacher)
    teacher = RegionSortedCNN(1, 4, region=4)
    torch.manual_seed(seed_model)
    return teacher, RegionSortedCNN(1, 4, region=4)


def test_the_feature_term_is_zero_for_the_teacher_itself_and_adds_to_the_soft_label_loss():
    teacher, model = _pair()
    x = torch.rand(6, 1, 16, 16)
    twin = copy.deepcopy(teacher)
    with FeatureMatchingLoss(teacher, twin, temperature=4.0, weight=1.0) as same:
        assert float(same(twin(x), None, x).detach()) == pytest.approx(0.0, abs=1e-6)
    probabilities = float(soft_label_loss(teacher, 4.0)(model(x), None, x).detach())
    with FeatureMatchingLoss(teacher, model, temperature=4.0, weight=2.0) as both:
        value = float(both(model(x), None, x).detach())
    with torch.no_grad():
        fm, ft = model.grid_features(x), teacher.grid_features(x)
    expected = probabilities + 2.0 * float((fm - ft).pow(2).mean() / ft.pow(2).mean())
    assert value > probabilities and value == pytest.approx(expected, rel=1e-5)


def test_the_gradient_reaches_the_model_through_its_features_not_the_teacher():
    teacher, model = _pair()
    x = torch.rand(6, 1, 16, 16)
    with FeatureMatchingLoss(teacher, model, temperature=4.0, weight=1.0) as loss_fn:
        loss_fn(model(x), None, x).backward()
    first = model.grid[0].weight.grad
    assert first is not None and first.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_remove_takes_the_hooks_off_both_models():
    teacher, model = _pair()
    loss_fn = FeatureMatchingLoss(teacher, model, temperature=4.0, weight=1.0)
    assert len(teacher.grid._forward_hooks) == len(model.grid._forward_hooks) == 1
    loss_fn.remove()
    assert len(teacher.grid._forward_hooks) == len(model.grid._forward_hooks) == 0


def test_training_pulls_the_model_toward_the_teachers_features():
    teacher, model = _pair()
    x = torch.rand(64, 1, 16, 16)
    y = torch.zeros(64, dtype=torch.long)

    def distance():
        with torch.no_grad():
            return float((model.grid_features(x) - teacher.grid_features(x)).pow(2).mean())

    before = distance()
    with FeatureMatchingLoss(teacher, model, temperature=4.0, weight=1.0) as loss_fn:
        fit_classifier(model, (x, y), epochs=20, batch_size=16, lr=3e-3, seed=0, loss_fn=loss_fn)
    assert distance() < 0.5 * before


@pytest.mark.parametrize("teacher, model, weight, match", [
    (RegionSortedCNN(1, 4), SmallCNN(1, 4), 1.0, r"model \(SmallCNN\) has no region grid"),
    (SmallCNN(1, 4), RegionSortedCNN(1, 4), 1.0, r"teacher \(SmallCNN\) has no region grid"),
    (RegionSortedCNN(1, 4), RegionSortedCNN(1, 4), -1.0, "weight=-1.0 is not allowed"),
])
def test_bad_pairs_and_weights_are_refused(teacher, model, weight, match):
    with pytest.raises(ValueError, match=match):
        FeatureMatchingLoss(teacher, model, temperature=4.0, weight=weight)


def test_the_soft_label_loss_needs_the_model_for_features():
    with pytest.raises(ValueError, match=r"feature_weight=1.0 needs the model"):
        soft_label_loss(RegionSortedCNN(1, 4), 4.0, feature_weight=1.0)


@pytest.mark.parametrize("kw, match", [
    ({"soft_label_features": 1.0, "soft_labels": None}, "soft_label_features=1.0 needs a teacher: soft_labels="),
    ({"soft_label_features": 1.0, "soft_labels": None, "mix": None, "soft_label_file": "s.csv", "augment": ["hflip"]},
     r"the released features are of the images as they are, so augment=\['hflip'\] cannot"),
    ({"soft_label_features": 1.0, "model": "cnn"}, "soft_label_features=1.0 needs a region-sorted model"),
    ({"soft_label_features": -0.5}, "soft_label_features=-0.5 is not allowed"),
    ({"soft_label_features": float("nan")}, "soft_label_features=nan is not allowed"),
    ({"soft_label_features": True}, "soft_label_features=True is not allowed"),
])
def test_the_option_is_checked(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(tmp_path, **{**_BASE, **kw}).validate()


def test_train_with_features_changes_the_training_and_leaves_no_hooks(tmp_path, sets, models):
    plain = L.train(_cfg(tmp_path / "p", **_BASE), sets=sets)["runs"][0]
    matched = L.train(_cfg(tmp_path / "f", soft_label_features=1.0, **_BASE), sets=sets)["runs"][0]
    assert matched["history"][0]["train_loss"] > plain["history"][0]["train_loss"]  # the feature term adds
    assert all(not m.grid._forward_hooks for m in models)
    # resuming with another weight is refused; a checkpoint made before the option resumes as weight 0
    with pytest.raises(ValueError, match="soft_label_features"):
        L.train(_cfg(tmp_path / "p", resume=True, soft_label_features=1.0, **{**_BASE, "epochs": 2}), sets=sets)
    ckpt = tmp_path / "p" / "seed0" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=False)
    del state["config"]["soft_label_features"]
    torch.save(state, ckpt)
    resumed = L.train(_cfg(tmp_path / "p", resume=True, **{**_BASE, "epochs": 2, "soft_label_epochs": 1}),
                      sets=sets)["runs"][0]  # (the same 1-epoch teacher: a longer run would train another)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]


def test_online_mixing_matches_the_features_of_every_epochs_collages(tmp_path, sets, models, monkeypatch):
    seen = []  # every batch the feature-matching loss scores
    real_call = FeatureMatchingLoss.__call__

    def spy(self, logits, targets, inputs):
        seen.append((inputs.shape[0], inputs.detach().clone()))
        return real_call(self, logits, targets, inputs)

    monkeypatch.setattr(FeatureMatchingLoss, "__call__", spy)
    online = {**_BASE, "mode": "online", "mix_grouping": "similar", "epochs": 2}
    plain = L.train(_cfg(tmp_path / "p", **online), sets=sets)["runs"][0]
    assert not seen
    matched = L.train(_cfg(tmp_path / "f", soft_label_features=1.0, **online), sets=sets)["runs"][0]
    assert matched["history"][0]["train_loss"] > plain["history"][0]["train_loss"]  # the feature term adds
    # every image of both epochs went through it, and the second epoch's collages are new ones
    assert sum(n for n, _ in seen) == 2 * sets[0].images.shape[0]
    half = len(seen) // 2
    first, second = torch.cat([x for _, x in seen[:half]]), torch.cat([x for _, x in seen[half:]])
    assert first.shape == second.shape and not torch.equal(first.sort(0).values, second.sort(0).values)
    assert all(not m.grid._forward_hooks for m in models)


def test_cli_soft_label_features(tmp_path, sets, monkeypatch, capsys):
    monkeypatch.setattr(L, "load_sets", lambda cfg: sets)
    args = ["train", "--model", "region-sorted", "--target-vfe", "1.0", "--mix", "2", "--soft-labels",
            "region-sorted", "--soft-label-epochs", "1", "--epochs", "1", "--batch-size", "32", "--no-progress"]
    assert main([*args, "--soft-label-features", "1", "--out", str(tmp_path / "cli")]) == 0
    cfg = json.loads((tmp_path / "cli" / "metrics.json").read_text())["config"]
    assert cfg["soft_label_features"] == 1.0
    assert main(["train", "--target-vfe", "1.0", "--soft-label-features", "1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--soft-label-features 1.0 needs a teacher: --soft-labels region-sorted, or --soft-label-file FILE" in err


# --- the release path: features in a file beside the soft labels -----------------------------------------------


def test_features_are_written_beside_the_file_and_read_in_the_callers_order(tmp_path):
    files = [f"a/{i}.png" for i in range(5)]
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    feats = torch.rand(5, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    path = write_soft_labels(tmp_path / "s.csv", files, "abcd", logits, features=feats)
    assert features_path(path) == tmp_path / "s.features.npy" and features_path(path).exists()
    assert oct(features_path(path).stat().st_mode & 0o777) == "0o644"
    order = [3, 0, 4]
    got = read_soft_labels(path, [files[i] for i in order], "abcd", features=True)
    assert got.shape == (3, 4 + 12) and got.dtype == torch.float32
    assert torch.equal(got[:, :4], logits[order])
    assert torch.equal(got[:, 4:], feats[order].half().float().flatten(1))  # stored as float16
    assert torch.equal(read_soft_labels(path, files, "abcd"), logits)  # the logits alone, as before


def test_a_file_without_its_features_is_refused_by_name(tmp_path):
    files = ["a/0.png", "a/1.png"]
    path = write_soft_labels(tmp_path / "s.csv", files, "abcd", torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"no features beside it \(s.features.npy\): .*soft-labels --features"):
        read_soft_labels(path, files, "abcd", features=True)
    other = tmp_path / "other.csv"
    write_soft_labels(other, files + ["a/2.png"], "abcd", torch.zeros(3, 4), features=torch.zeros(3, 2))
    features_path(other).replace(features_path(path))
    with pytest.raises(ValueError, match="has 3 rows, .* 2: they were not written together"):
        read_soft_labels(path, files, "abcd", features=True)
    with pytest.raises(ValueError, match=r"features must be \(2, ...\)"):
        write_soft_labels(path, files, "abcd", torch.zeros(2, 4), features=torch.zeros(3, 2))
    # logits of the wrong shape: refused before the features are written
    with pytest.raises(ValueError, match=r"logits must be \(2, 4\)"):
        write_soft_labels(tmp_path / "bad.csv", files, "abcd", torch.zeros(2, 3), features=torch.zeros(2, 2))
    assert not features_path(tmp_path / "bad.csv").exists()


def test_released_features_give_the_loss_of_the_live_teacher():
    teacher, model = _pair()
    x = torch.rand(6, 1, 16, 16)

    def same(t):
        return t

    targets = torch.cat([release_logits(teacher, x, prepare=same),
                         release_features(teacher, x, prepare=same).float().flatten(1)], dim=1)
    with FeatureMatchingLoss(teacher, model, temperature=4.0, weight=1.0) as live:
        expected = float(live(model(x), None, x).detach())
    with soft_target_loss(4.0, model=model, feature_weight=1.0) as released:
        got = float(released(model(x), targets, x).detach())
    assert got == pytest.approx(expected, rel=1e-3)  # the features travel as float16
    assert not model.grid._forward_hooks


def test_the_owner_releases_features_and_the_trainer_matches_them(tmp_path, capsys):
    from test_soft_label_file import mixed_release

    src, root = mixed_release(tmp_path)
    args = ["soft-labels", str(src), str(root / "train"), "--channels", "1", "--region", "4", "--epochs", "1",
            "--batch-size", "16", "--no-progress"]
    assert main([*args, "--features", "--augment", "hflip"]) == 2
    assert "--features with --augment" in capsys.readouterr().err
    assert main([*args, "--features"]) == 0
    report = json.loads(capsys.readouterr().out)
    sl = root / "train" / "soft-labels.csv"
    assert report["features"] == str(features_path(sl))
    assert np.load(features_path(sl)).shape == (48, 128, 7, 7)  # the region grid, pooled to 7×7
    train = ["train", "--data", f"imagefolder:{root}", "--channels", "1", "--target-vfe", "none", "--model",
             "region-sorted", "--region", "4", "--soft-label-file", str(sl), "--epochs", "1", "--batch-size", "16",
             "--no-progress"]
    assert main([*train, "--out", str(tmp_path / "plain")]) == 0
    assert main([*train, "--soft-label-features", "1", "--out", str(tmp_path / "matched")]) == 0
    plain, matched = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("plain", "matched"))
    assert matched["config"]["soft_label_features"] == 1.0
    assert matched["runs"][0]["history"][0]["train_loss"] > plain["runs"][0]["history"][0]["train_loss"]


def test_one_pass_gives_the_logits_and_the_features_of_two():
    teacher, _ = _pair()
    x = torch.randint(0, 256, (10, 1, 28, 28), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)

    def prepare(b):
        return b.float() / 255

    logits, features = release_logits_and_features(teacher, x, prepare=prepare, batch_size=4)
    assert torch.equal(logits, release_logits(teacher, x, prepare=prepare, batch_size=4))
    assert torch.equal(features, release_features(teacher, x, prepare=prepare, batch_size=4))
