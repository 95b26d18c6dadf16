"""Federated learning with keyed region mixing per client (`visualmixer fl --mix K`)."""

import numpy as np
import pytest
import torch

from test_soft_labels import _Constant  # a teacher sure of one class
from visualmixer.fl import task


def test_client_mixes_its_own_partition_offline_and_online():
    cfg = task.FLConfig(target_vfe=0.5, mix=2)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.arange(16) % 2
    idx = np.arange(100, 116)
    key = task.client_key(cfg, 0)
    off = task.obfuscate_local(x, idx, cfg, key, 1, labels=y)
    assert off.shape == x.shape and not torch.equal(off, x)
    assert torch.equal(off, task.obfuscate_local(x, idx, cfg, key, 2, labels=y))  # offline: one release
    # regions move between same-class images: per-image value multisets are no longer kept
    assert not torch.equal(off.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    # but the class's multiset of values is
    for c in (0, 1):
        assert torch.equal(off[y == c].flatten().sort().values, x[y == c].flatten().sort().values)
    cfg.mode = "online"
    assert not torch.equal(task.obfuscate_local(x, idx, cfg, key, 1, labels=y),
                           task.obfuscate_local(x, idx, cfg, key, 2, labels=y))
    with pytest.raises(ValueError, match="labels"):
        task.obfuscate_local(x, idx, cfg, key, 1)


def test_run_config_mix():
    assert task.FLConfig.from_run_config({"mix": 4}).mix == 4
    with pytest.raises(ValueError, match="mix must be 0"):
        task.FLConfig.from_run_config({"mix": 1})


# -- the region-sorted model and each client's own soft labels -----------------------------------

def test_run_config_model_and_soft_labels():
    cfg = task.FLConfig.from_run_config({"model": "region-sorted", "soft-labels": "region-sorted",
                                         "soft-label-epochs": "2", "soft-label-temperature": "2"})
    assert (cfg.model, cfg.soft_labels, cfg.soft_label_epochs, cfg.soft_label_temperature) == \
        ("region-sorted", "region-sorted", 2, 2.0)
    assert task.FLConfig.from_run_config({}).soft_labels == ""  # hard labels by default
    for rc, match in [({"model": "resnet18"}, "model='resnet18' is not allowed: give one of cnn, region-sorted"),
                      ({"soft-labels": "cnn"}, "soft_labels='cnn' is not allowed"),
                      ({"soft-labels": "region-sorted", "target-vfe": -1.0}, "needs a target VFE"),
                      ({"soft-labels": "region-sorted", "soft-label-epochs": 0}, "soft_label_epochs=0")]:
        with pytest.raises(ValueError, match=match):
            task.FLConfig.from_run_config(rc)


def test_a_client_fits_its_teacher_not_the_labels():
    """Uniform labels, a teacher that always says 3: the client's update makes the shared model say 3."""
    cfg = task.FLConfig(target_vfe=1.0, mix=2, model="region-sorted", soft_labels="region-sorted",
                        local_epochs=4, batch_size=16, lr=0.05)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.arange(64) % 10
    model = task.make_model(seed=0, model="region-sorted")
    assert type(model).__name__ == "RegionSortedCNN" and model.region == 4
    xo = task.obfuscate_local(x, np.arange(64), cfg, task.client_key(cfg, 0), 1, labels=y)
    task.local_train(model, xo, y, cfg, teacher=_Constant(3, classes=10))
    with torch.no_grad():
        assert (model(task._norm(xo)).argmax(1) == 3).float().mean() > 0.95


def test_the_client_teacher_learns_from_the_originals(monkeypatch):
    from visualmixer.train import soft_labels

    seen = []
    real = soft_labels.teacher_for

    def spy(model, images, labels, num_classes, **kw):
        seen.append((model, images.data_ptr(), kw["epochs"], kw["region"]))
        return real(model, images, labels, num_classes, **kw)

    monkeypatch.setattr(soft_labels, "teacher_for", spy)
    cfg = task.FLConfig(target_vfe=1.0, model="region-sorted", soft_labels="region-sorted", soft_label_epochs=1)
    x = torch.randint(0, 256, (32, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    teacher = task.client_teacher(cfg, x, torch.arange(32) % 10)
    assert seen == [("region-sorted", x.data_ptr(), 1, 4)] and not teacher.training


def test_a_diverging_client_sends_nothing_and_says_what_to_change():
    from visualmixer.train.fit import TrainingDiverged

    cfg = task.FLConfig(target_vfe=None, batch_size=16, lr=1e4)
    x = torch.randint(0, 256, (64, 1, 28, 28), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    with pytest.raises(TrainingDiverged, match=r"training loss became .* \(client SGD at lr=10000.0\): try a lower lr"):
        task.local_train(task.make_model(seed=0), x, torch.arange(64) % 10, cfg)


def test_a_client_matches_its_teachers_features_and_gives_back_a_clean_model():
    """--soft-label-features: the client's update pulls the shared model's grid toward its teacher's."""
    cfg = task.FLConfig.from_run_config({"target-vfe": 1.0, "mix": 2, "model": "region-sorted",
                                         "soft-labels": "region-sorted", "soft-label-features": "1",
                                         "local-epochs": 3, "batch-size": 16, "lr": 0.01})
    assert cfg.soft_label_features == 1.0
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.arange(64) % 10
    xo = task.obfuscate_local(x, np.arange(64), cfg, task.client_key(cfg, 0), 1, labels=y)
    teacher = task.make_model(seed=5, model="region-sorted")

    def distance(model):
        with torch.no_grad():
            return float((model.grid_features(task._norm(xo)) - teacher.grid_features(task._norm(xo))).pow(2).mean())

    runs = {}
    for weight in (0.0, 1.0):
        cfg.soft_label_features = weight
        model = task.make_model(seed=0, model="region-sorted")
        task.local_train(model, xo, y, cfg, teacher=teacher)
        assert not model.grid._forward_hooks and not teacher.grid._forward_hooks
        runs[weight] = distance(model)
    assert runs[1.0] < runs[0.0]


@pytest.mark.parametrize("rc, match", [
    ({"soft-label-features": 1.0, "model": "region-sorted"},
     r"soft_label_features=1.0 needs a teacher: soft_labels='region-sorted'"),
    ({"soft-label-features": 1.0, "soft-labels": "region-sorted"}, r"needs a region-sorted model, .* \(got 'cnn'\)"),
    ({"soft-label-features": -1, "soft-labels": "region-sorted", "model": "region-sorted"}, "weight >= 0"),
])
def test_run_config_feature_matching_is_checked(rc, match):
    with pytest.raises(ValueError, match=match):
        task.FLConfig.from_run_config({"target-vfe": 1.0, **rc})


# -- augmentation per client (`visualmixer fl --augment hflip`) ----------------------------------

def test_run_config_augment():
    assert task.FLConfig.from_run_config({"augment": "hflip"}).augment == "hflip"
    assert task.FLConfig.from_run_config({}).augment == ""
    with pytest.raises(ValueError, match="augment=.*'vflip'.* is not allowed"):
        task.FLConfig.from_run_config({"augment": "vflip"})


def test_a_client_augments_its_batches_and_its_teacher(monkeypatch):
    from visualmixer.train import augment as A
    from visualmixer.train import soft_labels

    flips, teachers = [], []
    real_call, real_teacher = A.RegionGridFlip.__call__, soft_labels.teacher_for

    def spy(self, inputs, targets):
        flips.append(self.region)
        return real_call(self, inputs, targets)

    def teacher_spy(*args, **kw):
        teachers.append(kw.get("augment"))
        return real_teacher(*args, **kw)

    monkeypatch.setattr(A.RegionGridFlip, "__call__", spy)
    monkeypatch.setattr(soft_labels, "teacher_for", teacher_spy)
    x = torch.randint(0, 256, (32, 1, 28, 28), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    y = torch.arange(32) % 10
    trained = {}
    for names in ("", "hflip"):
        cfg = task.FLConfig.from_run_config({"target-vfe": 1.0, "model": "region-sorted", "augment": names,
                                             "soft-labels": "region-sorted", "batch-size": 16, "lr": 0.01})
        teacher = task.client_teacher(cfg, x, y)
        model = task.make_model(seed=0, model="region-sorted")
        task.local_train(model, x, y, cfg, teacher=teacher)
        trained[names] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert teachers[0] is None and isinstance(teachers[1], A.RegionGridFlip)
    assert flips and set(flips) == {4}  # the grid of the protection's regions, for the teacher and the model
    assert not torch.equal(trained[""], trained["hflip"])
