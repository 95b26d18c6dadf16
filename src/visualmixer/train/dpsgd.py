"""DP-SGD (Opacus): train a classifier on clean images so the *weights* carry an (ε, δ) guarantee.

The §8.3 reference that "protects the model, not the pixels". Its home is training; it is
re-exported by :mod:`visualmixer.eval.baselines` beside the pixel-protecting baselines.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from visualmixer.core.optional import require
from visualmixer.train.fit import fit_classifier, isolated_rng

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
    seed: int | None = None,
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
    progress : bool
        A progress bar per epoch.
    seed : int, optional
        Seeds the Poisson sampling and the noise (drawn from torch's global generator inside
        :func:`~visualmixer.train.fit.isolated_rng`, so the caller's global state is unchanged).
        None: from the OS. A seed is for experiments only.

    Returns
    -------
    (torch.nn.Module, float)
        The trained model, unwrapped (Opacus's hooks removed: an ordinary ``nn.Module`` again) and
        the spent ε at ``delta``.

    Raises
    ------
    visualmixer.core.optional.MissingExtraError
        When opacus is not installed (``pip install 'visualmixer[dp]'``).
    """
    opacus = require("opacus", extra="dp", purpose="DP-SGD")
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with warnings.catch_warnings(), isolated_rng(seed, device):
        warnings.simplefilter("ignore")  # opacus warns that its secure RNG is off (fine for a reference)
        engine = opacus.PrivacyEngine(accountant="rdp")
        pmodel, popt, ploader = engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=train_loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
        )
        fit_classifier(pmodel, ploader, epochs=epochs, optimizer=popt, device=device, seed=seed,
                       progress=progress, desc="DP-SGD")
        eps = float(engine.get_epsilon(delta))
    # Opacus's per-sample-gradient hooks (and its attributes on the parameters) would stay on the
    # module: a later plain backward pass would fail ("Poisson sampling is not compatible with grad
    # accumulation"). to_standard_module removes them and hands back the wrapped module.
    unwrap = getattr(pmodel, "to_standard_module", None)
    return (unwrap() if unwrap is not None else getattr(pmodel, "_module", pmodel)), eps
