"""ST-Adam: Adam whose first-moment decay adapts to gradient agreement.

Per parameter tensor, at step ``t``::

    c_t   = cosine(g_t, m_{t-1})                      (0 at the first step, or if a norm is 0)
    b1_t  = beta_lo + (beta_hi - beta_lo) * (1 - c_t) / 2
    m_t   = b1_t * m_{t-1} + (1 - b1_t) * g_t
    v_t   = beta2 * v_{t-1} + (1 - beta2) * g_t**2
    P_t   = prod_{k<=t} b1_k                          (bias correction of m)
    p     = p * (1 - lr * weight_decay)               (decoupled, as AdamW)
    p     = p - lr * (m_t / (1 - P_t)) / (sqrt(v_t / (1 - beta2**t)) + eps)

Where the new gradient disagrees with the momentum (``c_t < 0``, oscillation) the decay
moves towards ``beta_hi`` (more smoothing); where they agree it moves towards ``beta_lo``
(follows faster). With ``beta_lo == beta_hi == beta1`` the rule is exactly AdamW with
``betas=(beta1, beta2)``.

Whether it helps is measured, not assumed: see ``docs/results.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["STAdam"]


class STAdam(Optimizer):
    """ST-Adam optimizer (agreement-adaptive first moment, decoupled weight decay).

    Parameters
    ----------
    params : iterable of torch.Tensor or dict
        Parameters to optimise, or parameter-group dicts (as for any ``torch.optim.Optimizer``).
    lr : float, default 1e-3
        Learning rate (> 0).
    betas : tuple of 3 floats, default (0.8, 0.99, 0.999)
        ``(beta_lo, beta_hi, beta2)``: range of the adaptive first-moment decay and the
        second-moment decay; ``0 <= beta_lo <= beta_hi < 1`` and ``0 <= beta2 < 1``.
    eps : float, default 1e-8
        Added to the denominator (>= 0).
    weight_decay : float, default 0.0
        Decoupled weight decay coefficient (>= 0), applied as ``p *= 1 - lr * weight_decay``.
    foreach : bool or None, default None
        Use the multi-tensor (``torch._foreach_*``) implementation. ``None`` picks it when all
        parameters of a group are on a CUDA device. Both give the same result.

    Notes
    -----
    State per parameter: ``step`` (int), ``exp_avg`` and ``exp_avg_sq`` (like the parameter),
    ``beta1_prod`` (0-dim float32 tensor on the parameter's device, the running product of the
    ``b1_t``) and ``beta1`` (0-dim, the last ``b1_t``, for monitoring). No host-device
    synchronisation happens in ``step``. Sparse gradients are not supported.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.8, 0.99, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
    ) -> None:
        _check_hparams(lr, betas, eps, weight_decay)
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, foreach=foreach
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:  # validate per-group overrides
        merged = {**self.defaults, **param_group}
        _check_hparams(merged["lr"], merged["betas"], merged["eps"], merged["weight_decay"])
        super().add_param_group(param_group)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimisation step.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss; called with gradients enabled.

        Returns
        -------
        loss : float or torch.Tensor or None
            What ``closure`` returned, if given.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, states = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("STAdam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
                    state["beta1_prod"] = torch.ones((), dtype=torch.float32, device=p.device)
                    state["beta1"] = torch.zeros((), dtype=torch.float32, device=p.device)
                params.append(p)
                grads.append(p.grad)
                states.append(state)
            if not params:
                continue
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.is_cuda for p in params)
            impl = _step_foreach if foreach else _step_single
            impl(params, grads, states, group)
        return loss


def _check_hparams(lr, betas, eps, weight_decay) -> None:
    if not lr > 0.0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if len(betas) != 3:
        raise ValueError(f"betas must be (beta_lo, beta_hi, beta2), got {betas!r}")
    lo, hi, b2 = (float(b) for b in betas)
    if not 0.0 <= lo <= hi < 1.0:
        raise ValueError(f"betas must satisfy 0 <= beta_lo <= beta_hi < 1, got ({lo}, {hi})")
    if not 0.0 <= b2 < 1.0:
        raise ValueError(f"beta2 must be in [0, 1), got {b2}")
    if not eps >= 0.0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if not weight_decay >= 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")


def _adaptive_beta1(g: Tensor, m: Tensor, first: bool, lo: float, hi: float) -> Tensor:
    """0-dim float32 tensor ``b1_t`` from the cosine between gradient ``g`` and momentum ``m``."""
    if first:
        cos = torch.zeros((), dtype=torch.float32, device=g.device)
    else:
        g32, m32 = g.detach().float().reshape(-1), m.detach().float().reshape(-1)
        denom = torch.linalg.vector_norm(g32) * torch.linalg.vector_norm(m32)
        cos = torch.where(denom > 0, torch.dot(g32, m32) / denom.clamp_min(1e-30), 0.0)
        cos = cos.clamp(-1.0, 1.0)
    return lo + (hi - lo) * (1.0 - cos) * 0.5


def _step_single(params, grads, states, group) -> None:
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    lo, hi, beta2 = group["betas"]
    for p, g, st in zip(params, grads, states, strict=True):
        m, v = st["exp_avg"], st["exp_avg_sq"]
        beta1 = _adaptive_beta1(g, m, st["step"] == 0, lo, hi)
        st["step"] += 1
        t = st["step"]
        st["beta1"] = beta1
        st["beta1_prod"] = st["beta1_prod"] * beta1
        m.lerp_(g, (1 - beta1).to(m.dtype))
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        if wd != 0:
            p.mul_(1 - lr * wd)
        bc1 = (1 - st["beta1_prod"]).to(p.dtype)
        bc2 = 1 - beta2**t
        denom = (v / bc2).sqrt_().add_(eps)
        p.addcdiv_(m / bc1, denom, value=-lr)


def _step_foreach(params, grads, states, group) -> None:
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    lo, hi, beta2 = group["betas"]
    ms = [st["exp_avg"] for st in states]
    vs = [st["exp_avg_sq"] for st in states]
    b1s = []
    for g, m, st in zip(grads, ms, states, strict=True):
        beta1 = _adaptive_beta1(g, m, st["step"] == 0, lo, hi)
        st["step"] += 1
        st["beta1"] = beta1
        st["beta1_prod"] = st["beta1_prod"] * beta1
        b1s.append(beta1)
    # m <- b1 m + (1 - b1) g == lerp(m, g, 1 - b1), per-tensor 0-dim weights
    for m, g, b1 in zip(ms, grads, b1s, strict=True):
        m.lerp_(g, (1 - b1).to(m.dtype))
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
    if wd != 0:
        torch._foreach_mul_(params, 1 - lr * wd)
    bc2 = [1 - beta2 ** st["step"] for st in states]
    denom = torch._foreach_div(vs, bc2)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    mhat = [m / (1 - st["beta1_prod"]).to(m.dtype) for m, st in zip(ms, states, strict=True)]
    torch._foreach_addcdiv_(params, mhat, denom, value=-lr)
