"""The one training loop (visualmixer.train.fit): data forms, seeding, RNG isolation, NaN stop, resume,
online re-keying through ObfuscatedDataset, and every library trainer leaving the global RNG alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import visualmixer as vm
from visualmixer.core import mixer
from visualmixer.data.datasets import ImageSet
from visualmixer.data.wrapper import ObfuscatedDataset
from visualmixer.train.fit import (
    ShuffledBatches,
    TrainingDiverged,
    evaluate_classifier,
    fit_classifier,
    init_model,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _data(n=48, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randint(0, 100, (n, 1, size, size), generator=g, dtype=torch.uint8)
    x[y == 1, :, : size // 2] += 150
    return x, y


def _model(seed=0):
    return init_model(lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)), seed=seed)


def _weights(m):
    return [p.detach().clone() for p in m.parameters()]


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_init_model_equals_manual_seed_and_keeps_global_rng():
    state = torch.get_rng_state()
    m = _model(seed=3)
    assert torch.equal(state, torch.get_rng_state())
    torch.manual_seed(3)
    ref = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    assert _same(_weights(m), _weights(ref))
    assert not _same(_weights(m), _weights(_model(seed=4)))


def test_fit_on_tensors_is_seeded_learns_and_keeps_global_rng():
    x, y = _data()
    state = torch.get_rng_state()
    a, b = _model(), _model()
    ra = fit_classifier(a, (x, y), epochs=3, batch_size=8, lr=1e-2, seed=0)
    rb = fit_classifier(b, (x, y), epochs=3, batch_size=8, lr=1e-2, seed=0)
    assert torch.equal(state, torch.get_rng_state())
    assert _same(_weights(a), _weights(b)) and ra.step_losses == rb.step_losses
    assert len(ra.step_losses) == 3 * 6 and [e.epoch for e in ra.epochs] == [0, 1, 2]
    assert [e.samples for e in ra.epochs] == [48] * 3 and all(e.steps == 6 for e in ra.epochs)
    assert ra.epochs[-1].loss < ra.epochs[0].loss
    c = _model()
    fit_classifier(c, (x, y), epochs=3, batch_size=8, lr=1e-2, seed=1)  # another batch order
    assert not _same(_weights(a), _weights(c))
    _, acc = evaluate_classifier(a, x, y)
    assert acc > 0.9


def test_data_forms_give_the_same_model():
    """Tensors, a per-epoch callable returning the same tensors, and a Dataset with the same
    batch order train the same weights."""
    x, y = _data()
    runs = []
    for data in ((x, y), lambda epoch: (x, y)):
        m = _model()
        fit_classifier(m, data, epochs=2, batch_size=8, generator=torch.Generator().manual_seed(5))
        runs.append(_weights(m))
    m = _model()
    fit_classifier(m, TensorDataset(x, y), epochs=2, batch_size=8, generator=torch.Generator().manual_seed(5))
    runs.append(_weights(m))
    m = _model()
    batches = ShuffledBatches(48, 8, generator=torch.Generator().manual_seed(5))
    fit_classifier(m, DataLoader(TensorDataset(x, y), batch_sampler=batches), epochs=2)
    runs.append(_weights(m))
    assert all(_same(runs[0], r) for r in runs[1:])


def test_per_epoch_data_is_drawn_every_epoch_after_on_epoch_start():
    x, y = _data()
    events = []
    fit_classifier(_model(), lambda e: events.append(("data", e)) or (x, y), epochs=3, batch_size=16, seed=0,
                   on_epoch_start=lambda e: events.append(("start", e)),
                   on_epoch_end=lambda s: events.append(("end", s.epoch)))
    assert events == [(k, e) for e in range(3) for k in ("start", "data", "end")]


def test_resume_with_epoch_seeded_batches_equals_uninterrupted():
    x, y = _data()

    def run(epochs, model, opt, start=0):
        batches = ShuffledBatches(48, 8, epoch_seed=lambda e: 100 + e)
        return fit_classifier(model, (x, y), epochs=epochs, batches=batches, optimizer=opt, start_epoch=start)

    full = _model()
    run(3, full, torch.optim.SGD(full.parameters(), lr=0.1))
    part = _model()
    opt = torch.optim.SGD(part.parameters(), lr=0.1)
    run(1, part, opt)
    res = run(3, part, opt, start=1)
    assert [e.epoch for e in res.epochs] == [1, 2]
    assert _same(_weights(full), _weights(part))


def test_nonfinite_loss_stops_before_the_step():
    x, y = _data()
    m = _model()
    seen = []

    def loss_fn(logits, labels, inputs):
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return loss * float("nan") if len(seen) == 4 else loss

    def on_step(info):
        seen.append(_weights(m))

    with pytest.raises(TrainingDiverged, match="epoch 1, step 5") as err:
        fit_classifier(m, (x, y), epochs=2, batch_size=8, seed=0, loss_fn=loss_fn, on_step=on_step)
    assert (err.value.epoch, err.value.step) == (0, 4) and err.value.loss != err.value.loss
    assert _same(_weights(m), seen[-1])  # the NaN batch took no step
    m2 = _model()
    fit_classifier(m2, (x, y), epochs=1, batch_size=8, seed=0, stop_on_nonfinite=False,
                   loss_fn=lambda lg, lb, i: torch.nn.functional.cross_entropy(lg, lb) * float("nan"))


def test_empty_batches_are_skipped():
    x, y = _data()
    batches = [x[:8], x[:0], x[8:16]]
    labels = [y[:8], y[:0], y[8:16]]
    res = fit_classifier(_model(), list(zip(batches, labels, strict=True)), epochs=1, seed=0)
    assert res.epochs[0].steps == 2 and res.epochs[0].samples == 16


def test_online_obfuscated_dataset_rekeys_every_epoch(monkeypatch):
    """fit_classifier calls set_epoch on an ObfuscatedDataset: ids (index, epoch), one call per batch."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (12, 1, 16, 16), generator=g, dtype=torch.uint8)
    y = torch.arange(12) % 2
    ds = ObfuscatedDataset(TensorDataset(x, y), vm.Key.from_seed(0), target_vfe=0.5, mode="online")
    calls = []
    real = mixer.obfuscate

    def spy(images, **kw):
        calls.append(list(kw["ids"]))
        return real(images, **kw)

    monkeypatch.setattr(mixer, "obfuscate", spy)
    model = init_model(lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 2)), seed=0)
    fit_classifier(model, ds, epochs=2, batch_size=4, seed=0)
    assert len(calls) == 6 and all(len(c) == 4 for c in calls)
    for epoch in (0, 1):
        ids = [i for c in calls for i in c if i[1] == epoch]
        assert sorted(i[0] for i in ids) == list(range(12))


def test_every_library_trainer_leaves_the_global_rng_alone(tmp_path):
    from visualmixer.eval.attacks import Recognizer
    from visualmixer.fl import task
    from visualmixer.train import loop as L
    from visualmixer.train.distill import DistillConfig, run_distill

    x, y = _data(n=32, size=16)
    sets = (ImageSet(x, y, ("a", "b"), "s"), ImageSet(x[:16], y[:16], ("a", "b"), "s"))
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    Recognizer(2, epochs=1, width=8, seed=0).fit(x, y)
    Recognizer(2, epochs=1, width=8, seed=None).fit(x, y)
    for mode in ("offline", "online"):
        L.train(L.TrainConfig(data="s", target_vfe=0.5, mode=mode, epochs=1, batch_size=8, seeds=[0],
                              out=str(tmp_path / mode), progress=False), sets=sets)
    run_distill(DistillConfig(target_vfe=0.5, compare_clean=False, teacher_epochs=1, student_epochs=1,
                              batch_size=8, seeds=[0]), sets=sets)
    cfg = task.FLConfig(target_vfe=0.5, batch_size=8)
    task.local_train(task.make_model(seed=0), task.obfuscate_local(x, np.arange(32), cfg, task.client_key(cfg, 0), 1),
                     y, cfg)
    assert torch.equal(state, torch.get_rng_state())


def test_dpsgd_train_is_seeded_and_keeps_global_rng():
    pytest.importorskip("opacus")
    from visualmixer.eval.attacks import RecognizerCNN
    from visualmixer.train.dpsgd import dpsgd_train

    x, y = _data(n=64)
    xf = x.float() / 255
    state = torch.get_rng_state()
    out = []
    for _ in range(2):
        loader = DataLoader(TensorDataset(xf, y), batch_size=16, generator=torch.Generator().manual_seed(0))
        model = init_model(lambda: RecognizerCNN(1, 2, 8), seed=0)
        model, eps = dpsgd_train(model, loader, epochs=1, seed=7)
        out.append(_weights(model))
    assert torch.equal(state, torch.get_rng_state())
    assert eps > 0 and _same(out[0], out[1])


def test_dpsgd_train_returns_a_plain_model_without_opacus_hooks():
    pytest.importorskip("opacus")
    from torch import nn

    from visualmixer.train.dpsgd import dpsgd_train

    x, y = _data(n=64)
    xf = x.float() / 255
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2))
    model, _ = dpsgd_train(model, DataLoader(TensorDataset(xf, y), batch_size=16), epochs=1, seed=0)
    assert type(model) is nn.Sequential
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)
    assert not any(hasattr(p, "grad_sample") or hasattr(p, "_forward_counter") for p in model.parameters())
    # a plain backward pass (twice, without an optimizer step) works on the returned model
    model.train()
    for _ in range(2):
        nn.functional.cross_entropy(model(xf[:10]), y[:10]).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_cosine_schedule_sets_each_epochs_lr_and_constant_leaves_it_alone():
    x, y = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    fit_classifier(model, (x, y), epochs=4, batch_size=16, optimizer=opt, seed=0, lr_schedule="cosine",
                   on_epoch_start=lambda e: seen.append(opt.param_groups[0]["lr"]))
    assert seen == pytest.approx([0.1 * 0.5 * (1 + np.cos(np.pi * e / 4)) for e in range(4)])
    # resumed at epoch 2 from the saved optimizer state: the same curve (its start kept as initial_lr)
    opt2 = torch.optim.SGD(_model().parameters(), lr=0.1)
    opt2.load_state_dict(opt.state_dict())
    later = []
    fit_classifier(model, (x, y), epochs=4, start_epoch=2, batch_size=16, optimizer=opt2, seed=0,
                   lr_schedule="cosine", on_epoch_start=lambda e: later.append(opt2.param_groups[0]["lr"]))
    assert later == pytest.approx(seen[2:])
    # "constant" (the default) never touches the lr: a caller's own change holds
    opt3 = torch.optim.SGD(model.parameters(), lr=0.1)
    lrs = []

    def halve(stats):
        opt3.param_groups[0]["lr"] /= 2

    fit_classifier(model, (x, y), epochs=3, batch_size=16, optimizer=opt3, seed=0, on_epoch_end=halve,
                   on_epoch_start=lambda e: lrs.append(opt3.param_groups[0]["lr"]))
    assert lrs == pytest.approx([0.1, 0.05, 0.025])
    with pytest.raises(ValueError, match="lr_schedule='step' is not known; valid: constant, cosine"):
        fit_classifier(model, (x, y), epochs=1, lr_schedule="step")
