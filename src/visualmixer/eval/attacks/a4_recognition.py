"""A4 machine recognition: a classifier trained on clean images, applied to protected images.

If a model trained only on originals still recognises the class of obfuscated images (or of the
A2/A3 reconstructions) well above chance, the obfuscation leaves machine-recognisable content.
The same CNN (:class:`RecognizerCNN`) is used by the audit for the utility measurement;
it trains with the library's one loop, :func:`visualmixer.train.fit.fit_classifier`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from visualmixer.core.imageops import add_batch_axis, to_float
from visualmixer.train.fit import fit_classifier, init_model

__all__ = ["RecognizerCNN", "SmallCNN", "Recognizer"]


class RecognizerCNN(nn.Module):
    """The attacker's / auditor's CNN: two conv blocks + a linear head, any input size (pooled to 4×4).

    GroupNorm instead of BatchNorm, so the same model also trains under DP-SGD (Opacus). Not to be
    confused with :class:`visualmixer.train.models.SmallCNN` (the ``visualmixer train`` model).
    """

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.GroupNorm(4, width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.GroupNorm(4, 2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


#: Former name of :class:`RecognizerCNN`, kept importable from :mod:`visualmixer.eval.attacks`.
SmallCNN = RecognizerCNN


class Recognizer:
    """Attack A4: train a classifier on clean images; measure its accuracy on protected ones.

    Parameters
    ----------
    num_classes : int
        Number of classes (chance = 1 / num_classes).
    epochs, batch_size, lr : int, int, float
        Adam training schedule.
    width : int
        Width of :class:`RecognizerCNN`.
    device : str or torch.device
        Where to train.
    seed : int, optional
        Seeds initialisation and minibatch order.
    progress : bool
        Show a progress bar.
    transform : callable, optional
        Applied to every training minibatch (uint8/float in, same out) — used by the audit to
        measure utility: a model trained on protected images and tested on protected images.
    model : callable, optional
        ``model(in_channels, num_classes) -> nn.Module``, the classifier to train (the audit's
        utility with another architecture, e.g. :class:`visualmixer.train.RegionSortedCNN`);
        default :class:`RecognizerCNN` of ``width``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        epochs: int = 3,
        batch_size: int = 128,
        lr: float = 1e-3,
        width: int = 32,
        device: str | torch.device = "cpu",
        seed: int | None = 0,
        progress: bool = False,
        transform=None,
        model: Callable[[int, int], torch.nn.Module] | None = None,
    ):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.num_classes = int(num_classes)
        self.epochs, self.batch_size, self.lr, self.width = int(epochs), int(batch_size), float(lr), int(width)
        self.device = torch.device(device)
        self.seed = seed
        self.progress = progress
        self.transform = transform
        self.build = model if model is not None else (lambda c, k: RecognizerCNN(c, k, self.width))
        self.model: torch.nn.Module | None = None

    def fit(self, images, labels, *, per_epoch: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Recognizer:
        """Train on ``images`` ``(M, C, H, W)`` with integer ``labels`` ``(M,)``; returns ``self``.

        ``per_epoch`` (optional) maps the whole training set to a fresh version at the start of
        every epoch (online re-protection: ``protect(images)`` anew each epoch); the identity
        trains exactly the model of a plain ``fit``. ``transform`` still applies per minibatch.
        """
        x, _ = add_batch_axis(images, "images")
        y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if y.numel() != x.shape[0]:
            raise ValueError(f"labels must have {x.shape[0]} entries, got {y.numel()}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        g = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        self.model = init_model(lambda: self.build(x.shape[1], self.num_classes), seed=self.seed, device=self.device)
        tf = self.transform
        fit_classifier(
            self.model, (x, y) if per_epoch is None else (lambda epoch: (per_epoch(x), y)),
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, device=self.device,
            generator=g, seed=self.seed, progress=self.progress, desc="A4 classifier",
            prepare=None if tf is None else (lambda xb: to_float(tf(xb))),
        )
        self.model.eval()
        return self

    @torch.no_grad()
    def predict(self, images, batch_size: int = 512) -> torch.Tensor:
        """Predicted class per image, int64 ``(N,)``."""
        if self.model is None:
            raise ValueError("call fit() before predict()")
        x, _ = add_batch_axis(images, "images")
        outs = [
            self.model(to_float(x[s : s + batch_size].to(self.device))).argmax(1).cpu()
            for s in range(0, x.shape[0], batch_size)
        ]
        return torch.cat(outs) if outs else torch.zeros(0, dtype=torch.long)

    def accuracy(self, images, labels) -> dict:
        """``{"accuracy", "chance", "predicted"}`` of the classifier on ``images``."""
        y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        pred = self.predict(images)
        if pred.numel() != y.numel():
            raise ValueError(f"labels must have {pred.numel()} entries, got {y.numel()}")
        return {
            "accuracy": float((pred == y).double().mean()) if y.numel() else float("nan"),
            "chance": 1.0 / self.num_classes,
            "predicted": pred,
        }
