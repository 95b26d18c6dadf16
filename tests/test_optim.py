"""ST-Adam (SPEC §6): update rule, reduction to AdamW, convergence, state_dict, closure, groups."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from visualmixer.train.optim import STAdam


def _reference(p0, grads, lr, lo, hi, b2, eps, wd):
    """Hand computation of SPEC §6 in float64 numpy, one parameter tensor."""
    p = p0.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    prod = 1.0
    betas = []
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if t == 1:
            c = 0.0
        else:
            c = float((g * m).sum() / (np.linalg.norm(g) * np.linalg.norm(m)))
        b1 = lo + (hi - lo) * (1 - c) / 2
        betas.append(b1)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        prod *= b1
        p = p * (1 - lr * wd)
        p = p - lr * (m / (1 - prod)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return p, betas


@pytest.mark.parametrize("foreach", [False, True])
def test_update_rule_matches_hand_computation(foreach):
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(4, 3))
    base = rng.normal(size=(4, 3))
    # alternate agreeing and oscillating gradients so c_t takes both signs
    grads = [base + 0.3 * rng.normal(size=(4, 3)) * (1 if t % 2 else -4) for t in range(6)]
    grads[3] = -grads[2]  # exact reversal: c_t strongly negative
    lr, lo, hi, b2, eps, wd = 0.05, 0.7, 0.97, 0.99, 1e-8, 0.1
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = STAdam([p], lr=lr, betas=(lo, hi, b2), eps=eps, weight_decay=wd, foreach=foreach)
    seen = []
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        seen.append(float(opt.state[p]["beta1"]))
    want, betas = _reference(p0, grads, lr, lo, hi, b2, eps, wd)
    np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(seen, betas, rtol=1e-6)
    assert seen[0] == pytest.approx((lo + hi) / 2)  # c_1 = 0
    assert seen[3] > seen[2]  # reversal -> more smoothing
    assert opt.state[p]["step"] == len(grads)


def test_first_step_zero_momentum_and_zero_grad_are_finite():
    p = torch.zeros(3, requires_grad=True)
    opt = STAdam([p])
    for _ in range(3):
        p.grad = torch.zeros(3)
        opt.step()
    assert torch.isfinite(p).all()
    assert torch.equal(p.detach(), torch.zeros(3))


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("foreach", [False, True])
def test_reduces_to_adamw_when_betas_equal(wd, foreach):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    ref = copy.deepcopy(model)
    a = STAdam(model.parameters(), lr=3e-3, betas=(0.9, 0.9, 0.999), weight_decay=wd,
               foreach=foreach)
    b = torch.optim.AdamW(ref.parameters(), lr=3e-3, betas=(0.9, 0.999), weight_decay=wd,
                          foreach=False)
    for _ in range(25):
        x, y = torch.randn(16, 6), torch.randn(16, 2)
        for mod, opt in ((model, a), (ref, b)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(mod(x), y).backward()
            opt.step()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_differs_from_adam_when_betas_differ():
    torch.manual_seed(0)
    p = torch.randn(5, requires_grad=True)
    q = p.detach().clone().requires_grad_(True)
    a, b = STAdam([p], lr=0.1), torch.optim.Adam([q], lr=0.1, betas=(0.9, 0.999))
    for t in range(5):
        g = torch.ones(5) * (-1) ** t
        p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
    assert not torch.allclose(p, q)


def test_toy_problem_converges():
    torch.manual_seed(1)
    a = torch.randn(20, 5)
    w_true = torch.randn(5, 1)
    y = a @ w_true
    w = torch.zeros(5, 1, requires_grad=True)
    opt = STAdam([w], lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=300, gamma=0.2)
    first = ((a @ w - y) ** 2).mean().item()
    for _ in range(1200):
        opt.zero_grad()
        loss = ((a @ w - y) ** 2).mean()
        loss.backward()
        opt.step()
        sched.step()
    assert loss.item() < 1e-5 * first
    torch.testing.assert_close(w.detach(), w_true, atol=1e-2, rtol=0)


def test_closure_is_called_and_returned():
    xy = torch.tensor([-1.5, 2.0], requires_grad=True)
    opt = STAdam([xy], lr=0.05)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = ((xy - torch.tensor([1.0, -1.0])) ** 2).sum()
        loss.backward()
        return loss

    first = closure().item()
    for _ in range(400):
        loss = opt.step(closure)
    assert torch.is_tensor(loss) and len(calls) == 401
    assert loss.item() < 1e-3 * first


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = STAdam(model.parameters(), lr=1e-2, weight_decay=0.01)
    data = [(torch.randn(8, 4), torch.randn(8, 3)) for _ in range(10)]

    def run(mod, o, batches):
        for x, y in batches:
            o.zero_grad()
            torch.nn.functional.mse_loss(mod(x), y).backward()
            o.step()

    run(model, opt, data[:5])
    sd_model = copy.deepcopy(model.state_dict())
    sd_opt = copy.deepcopy(opt.state_dict())
    run(model, opt, data[5:])

    model2 = torch.nn.Linear(4, 3)
    model2.load_state_dict(sd_model)
    opt2 = STAdam(model2.parameters(), lr=0.5)  # lr is restored from the state dict
    opt2.load_state_dict(sd_opt)
    assert opt2.param_groups[0]["lr"] == 1e-2
    run(model2, opt2, data[5:])
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_param_groups_have_their_own_hparams():
    w1 = torch.ones(3, requires_grad=True)
    w2 = torch.ones(3, requires_grad=True)
    opt = STAdam([{"params": [w1]}, {"params": [w2], "lr": 0.0 + 1e-9}], lr=0.1)
    w1.grad = torch.ones(3)
    w2.grad = torch.ones(3)
    opt.step()
    assert torch.allclose(w1, torch.full((3,), 0.9))
    assert torch.allclose(w2, torch.ones(3), atol=1e-8)


def test_params_without_grad_are_skipped():
    w1 = torch.ones(3, requires_grad=True)
    w2 = torch.ones(3, requires_grad=True)
    opt = STAdam([w1, w2])
    w1.grad = torch.ones(3)
    opt.step()
    assert w2 not in opt.state and torch.equal(w2.detach(), torch.ones(3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr": 0.0}, "lr"),
        ({"betas": (0.9, 0.8, 0.999)}, "beta_lo <= beta_hi"),
        ({"betas": (0.9, 0.999)}, "beta_lo, beta_hi, beta2"),
        ({"betas": (0.8, 0.99, 1.0)}, "beta2"),
        ({"eps": -1.0}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        STAdam([torch.zeros(1, requires_grad=True)], **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    p = torch.randn(64, 32, requires_grad=True)
    q = p.detach().cuda().requires_grad_(True)
    a, b = STAdam([p], lr=1e-2), STAdam([q], lr=1e-2)
    for _ in range(10):
        g = torch.randn(64, 32)
        p.grad, q.grad = g.clone(), g.cuda()
        a.step()
        b.step()
    torch.testing.assert_close(p.detach(), q.detach().cpu(), rtol=1e-4, atol=1e-5)
