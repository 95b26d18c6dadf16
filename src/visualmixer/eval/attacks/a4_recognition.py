"""A4 machine recognition: a classifier trained on clean images, applied to protected images.

If a model trained only on originals still recognises the class of obfuscated images (or of the
A2/A3 reconstructions) well above chance, the obfuscation leaves machine-recognisable content
(SPEC §8.1). The same small CNN is used by the audit for the utility measurement.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from visualmixer.core.imageops import add_batch_axis, to_float
from visualmixer.eval.attacks._train import batches, float_batch, progress_iter

__all__ = ["SmallCNN", "Recognizer"]


class SmallCNN(nn.Module):
    """Two conv blocks + a linear head, for any input size (adaptive pooling to 4×4).

    GroupNorm instead of BatchNorm, so the same model also trains under DP-SGD (Opacus).
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


class Recognizer:
    """Attack A4: train a classifier on clean images; measure its accuracy on protected ones.

    Parameters
    ----------
    num_classes : int
        Number of classes (chance = 1 / num_classes).
    epochs, batch_size, lr : int, int, float
        Adam training schedule.
    width : int
        Width of :class:`SmallCNN`.
    device : str or torch.device
        Where to train.
    seed : int, optional
        Seeds initialisation and minibatch order.
    progress : bool
        Show a tqdm bar.
    transform : callable, optional
        Applied to every training minibatch (uint8/float in, same out) — used by the audit to
        measure utility: a model trained on protected images and tested on protected images.
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
        self.model: SmallCNN | None = None

    def fit(self, images, labels) -> Recognizer:
        """Train on ``images`` ``(M, C, H, W)`` with integer ``labels`` ``(M,)``; returns ``self``."""
        x, _ = add_batch_axis(images, "images")
        y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if y.numel() != x.shape[0]:
            raise ValueError(f"labels must have {x.shape[0]} entries, got {y.numel()}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        g = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        if self.seed is not None:
            torch.manual_seed(self.seed)
        self.model = SmallCNN(x.shape[1], self.num_classes, self.width).to(self.device)
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        self.model.train()
        for _ in progress_iter(range(self.epochs), self.progress, "A4 classifier"):
            for idx in batches(x.shape[0], self.batch_size, g):
                xb = x[idx]
                if self.transform is not None:
                    xb = self.transform(xb)
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(self.model(float_batch(xb, self.device)), y[idx].to(self.device))
                loss.backward()
                opt.step()
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
