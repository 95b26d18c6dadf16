"""DP-SGD (Opacus): train a classifier on clean images so the *weights* carry an (ε, δ) guarantee.

The §8.3 reference that "protects the model, not the pixels". Its home is training; it is
re-exported by :mod:`visualmixer.eval.baselines` beside the pixel-protecting baselines.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from visualmixer.core.imageops import to_float

__all__ = ["dpsgd_train"]


def dpsgd_train(
    model: nn.Module,
    train_loader,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    noise_multiplier: float = 1.0,
    max_grad_norm: float = 1.0,
    delta: float = 1e-5,
    device: str | torch.device = "cpu",
    progress: bool = False,
):
    """Train ``model`` on clean images with DP-SGD (Opacus) and return ``(model, epsilon)``.

    This is the §8.3 reference that "protects the model, not the pixels": the trainer still sees
    every raw image (attack A1 scores SSIM 1.0 on its inputs), only the published weights carry
    an (ε, δ) guarantee.

    Parameters
    ----------
    model : torch.nn.Module
        A model without BatchNorm (Opacus needs per-sample gradients; use GroupNorm).
    train_loader : torch.utils.data.DataLoader
        Yields ``(images, labels)`` batches.
    epochs, lr : int, float
        Adam epochs and learning rate.
    noise_multiplier, max_grad_norm, delta : float
        DP-SGD noise multiplier, per-sample clipping norm and δ for the reported ε.

    Returns
    -------
    (torch.nn.Module, float)
        The trained (unwrapped) model and the spent ε at ``delta``.

    Raises
    ------
    ImportError
        When opacus is not installed (``pip install -c constraints.txt 'visualmixer[dp]'``).
    """
    try:
        from opacus import PrivacyEngine
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "DP-SGD needs opacus: pip install -c constraints.txt 'visualmixer[dp]' (opacus 1.6 "
            "installs beside torch 2.14.1 without replacing it)"
        ) from exc
    import warnings

    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # opacus warns that its secure RNG is off (fine for a reference)
        engine = PrivacyEngine(accountant="rdp")
        pmodel, popt, ploader = engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=train_loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
        )
        pmodel.train()
        for _ in range(epochs):
            for xb, yb in ploader:
                if len(xb) == 0:
                    continue
                xb = to_float(xb.to(device)) if xb.dtype == torch.uint8 else xb.to(device)
                popt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(pmodel(xb), yb.to(device))
                loss.backward()
                popt.step()
        eps = float(engine.get_epsilon(delta))
    return pmodel._module if hasattr(pmodel, "_module") else pmodel, eps
