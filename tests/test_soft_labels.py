"""Soft labels from the owner's teacher (`visualmixer train --soft-labels region-sorted`)."""

import json

import pytest
import torch
from torch import nn

from test_train import _cfg, _synthetic
from visualmixer.cli import main
from visualmixer.train import loop as L
from visualmixer.train.fit import fit_classifier
from visualmixer.train.soft_labels import soft_label_loss, teacher_for


@pytest.fixture(scope="module")
def sets():
    return _synthetic(96, 0), _synthetic(32, 1)


class _Constant(nn.Module):
    """A teacher sure of one class whatever the input."""

    def __init__(self, cls: int, classes: int = 4):
        super().__init__()
        self.logits = torch.full((classes,), -4.0)
        self.logits[cls] = 4.0

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def test_the_student_learns_the_teacher_not_the_labels():
    """Uniform hard labels, a teacher that always says class 2: the student ends up saying 2."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(256, 1, 8, 8, generator=g), torch.arange(256) % 4
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    fit_classifier(student, (x, y), epochs=5, batch_size=32, lr=1e-2, seed=0,
                   loss_fn=soft_label_loss(_Constant(2), temperature=2.0))
    with torch.no_grad():
        assert (student(x).argmax(1) == 2).float().mean() > 0.95


def test_the_loss_is_zero_against_itself_and_leaves_the_teacher_alone():
    torch.manual_seed(0)
    net = nn.Linear(5, 3)
    x = torch.randn(8, 5)
    loss = soft_label_loss(net, 4.0)
    assert float(loss(net(x), torch.zeros(8, dtype=torch.long), x).detach()) == pytest.approx(0.0, abs=1e-6)
    other = nn.Linear(5, 3)
    value = loss(other(x), torch.zeros(8, dtype=torch.long), x)
    value.backward()
    assert value > 0 and net.weight.grad is None and other.weight.grad is not None


def test_train_with_soft_labels_trains_a_teacher_on_the_originals(tmp_path, sets, monkeypatch):
    seen = []
    real = L.teacher_for

    def spy(model, images, labels, *args, **kw):
        seen.append((model, images.data_ptr(), kw["epochs"], kw["state"] is None))
        return real(model, images, labels, *args, **kw)

    monkeypatch.setattr(L, "teacher_for", spy)
    cfg = _cfg(tmp_path / "s", model="region-sorted", mix=2, target_vfe=1.0, epochs=1, soft_labels="region-sorted",
               soft_label_epochs=1)
    res = L.train(cfg, sets=sets)
    assert seen == [("region-sorted", sets[0].images.data_ptr(), 1, True)]  # the original images, a new teacher
    run = res["runs"][0]
    assert 0.0 <= run["teacher_test_acc"] <= 1.0 and res["summary"]["teacher_test_acc"]["n"] == 1
    assert (tmp_path / "s" / "seed0" / "teacher.pt").exists()
    # a resumed run loads its teacher instead of training another
    cfg = _cfg(tmp_path / "s", model="region-sorted", mix=2, target_vfe=1.0, epochs=2, soft_labels="region-sorted",
               soft_label_epochs=1, resume=True)
    res2 = L.train(cfg, sets=sets)
    assert seen[-1] == ("region-sorted", sets[0].images.data_ptr(), 1, False)
    assert res2["runs"][0]["teacher_test_acc"] == run["teacher_test_acc"]


def test_soft_labels_change_the_training(tmp_path, sets):
    base = dict(model="region-sorted", target_vfe=1.0, mix=2, epochs=1)
    hard = L.train(_cfg(tmp_path / "h", **base), sets=sets)["runs"][0]
    soft = L.train(_cfg(tmp_path / "t", soft_labels="region-sorted", **base), sets=sets)["runs"][0]
    assert hard["history"][0]["train_loss"] != soft["history"][0]["train_loss"]


def test_a_resume_refuses_other_soft_labels(tmp_path, sets):
    L.train(_cfg(tmp_path / "r", model="region-sorted", epochs=1), sets=sets)
    with pytest.raises(ValueError, match="soft_labels"):
        L.train(_cfg(tmp_path / "r", model="region-sorted", epochs=2, resume=True, soft_labels="region-sorted"),
                sets=sets)


def test_a_resume_that_would_train_another_teacher_is_refused(tmp_path, sets):
    """Without soft_label_epochs the teacher trains for epochs: a longer resumed run would load
    the teacher of the shorter one (a result no uninterrupted run gives)."""
    base = dict(model="region-sorted", target_vfe=1.0, mix=2, soft_labels="region-sorted")
    L.train(_cfg(tmp_path / "r", epochs=1, **base), sets=sets)
    with pytest.raises(ValueError, match="its soft-label teacher trained for 1 epochs.*give soft_label_epochs=1"):
        L.train(_cfg(tmp_path / "r", epochs=2, resume=True, **base), sets=sets)
    again = L.train(_cfg(tmp_path / "r", epochs=2, resume=True, soft_label_epochs=1, **base), sets=sets)  # same teacher
    assert [h["epoch"] for h in again["runs"][0]["history"]] == [1, 2]


def test_only_a_shuffle_blind_model_can_be_a_teacher():
    x, y = torch.zeros(4, 1, 16, 16, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="model='cnn' cannot be a teacher"):
        teacher_for("cnn", x, y, 4, region=4, epochs=1)


@pytest.mark.parametrize("kw, match", [
    ({"soft_labels": "cnn"}, "soft_labels='cnn' is not allowed: .*blind to the in-region shuffle: region-sorted"),
    ({"soft_labels": "region-sorted", "target_vfe": None}, "soft_labels='region-sorted' needs a target VFE"),
    ({"soft_label_epochs": 2}, "soft_label_epochs=2 needs soft_labels='region-sorted'"),
    ({"soft_labels": "region-sorted", "soft_label_epochs": 0}, "soft_label_epochs=0 is not allowed"),
    ({"soft_labels": "region-sorted", "soft_label_epochs": True}, "soft_label_epochs=True is not allowed"),
    ({"soft_labels": "region-sorted", "soft_label_temperature": 0}, "soft_label_temperature=0 is not allowed"),
])
def test_soft_label_options_are_checked(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(tmp_path, **kw).validate()


def test_cli_soft_labels(tmp_path, sets, monkeypatch, capsys):
    monkeypatch.setattr(L, "load_sets", lambda cfg: sets)
    rc = main(["train", "--model", "region-sorted", "--target-vfe", "1.0", "--mix", "2", "--soft-labels",
               "region-sorted", "--soft-label-epochs", "1", "--soft-label-temperature", "2", "--epochs", "1",
               "--batch-size", "32", "--no-progress", "--out", str(tmp_path / "cli")])
    assert rc == 0
    cfg = json.loads((tmp_path / "cli" / "metrics.json").read_text())["config"]
    assert (cfg["soft_labels"], cfg["soft_label_epochs"], cfg["soft_label_temperature"]) == ("region-sorted", 1, 2.0)
    assert main(["train", "--soft-labels", "cnn", "--out", str(tmp_path / "bad")]) != 0
    err = capsys.readouterr().err
    assert "--soft-labels cnn is not allowed" in err and "soft_labels" not in err


@pytest.mark.parametrize("model", ["region-sorted", "region-sorted-channels"])
def test_the_owners_teacher_reads_a_colour_release_as_its_originals(model):
    """Colour images protected one by one, chromatic shuffle on: the teacher's logits on the release
    equal its logits on the originals, bit for bit — for the per-channel model because the owner
    normalises its channels alike (with per-channel statistics the channel shuffle would move
    values between differently normalised channels)."""
    import visualmixer as vm
    from visualmixer.data.imageset import ImageSet
    from visualmixer.train.soft_labels import owner_soft_labels

    s = _synthetic(32, 0, channels=3)
    x = s.images.clone()
    x[:, 2] //= 3  # the channels' statistics differ
    originals = ImageSet(x, s.labels, s.classes)
    protected = vm.obfuscate(x, key=vm.Key.from_seed(1), ids=range(len(x)), target_vfe=1.0).images
    assert not torch.equal(protected, x)
    kw = dict(model=model, region=4, epochs=1, batch_size=16)
    on_originals = owner_soft_labels(originals, originals, **kw)
    on_release = owner_soft_labels(originals, ImageSet(protected, s.labels, s.classes), **kw)
    assert torch.equal(on_originals, on_release) == (model == "region-sorted-channels")
