"""A3 learned inversion: a small U-Net trained on the attacker's own (obfuscated → original) pairs.

The attacker knows the algorithm and its public parameters (Kerckhoffs), so it obfuscates images
of the same kind that it owns, with its own keys, trains an image-to-image network to undo the
obfuscation, and applies it to the victim's obfuscated images. The network never
sees a victim original or the victim's key.

Examples
--------
>>> import torch
>>> from visualmixer.eval.attacks import LearnedInversion
>>> own = torch.rand(64, 1, 16, 16)
>>> inv = LearnedInversion(lambda x: x, epochs=1, seed=0).fit(own)   # identity "obfuscation"
>>> inv(own[:4]).shape
torch.Size([4, 1, 16, 16])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from visualmixer.core.imageops import add_batch_axis, to_float
from visualmixer.eval.attacks._train import batches, float_batch, progress_iter
from visualmixer.train.fit import init_model

__all__ = ["UNet", "LearnedInversion"]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A small U-Net for any input size (padded to a multiple of ``2 ** (levels - 1)``, then cropped).

    Parameters
    ----------
    channels : int
        Image channels in and out.
    base : int
        Feature channels at full resolution (doubled per level).
    levels : int
        Resolution levels (3 = two downsamplings, as in our first calibration runs).
    side_channels : int
        Channels of a side input (e.g. a released model's feature grid ``(B, S, h, w)``) joined to
        the deepest level's input, resized to its resolution; 0 (default) for none.
    """

    def __init__(self, channels: int = 1, base: int = 16, levels: int = 3, side_channels: int = 0):
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        if side_channels < 0:
            raise ValueError(f"side_channels must be >= 0, got {side_channels}")
        self.levels, self.side_channels = levels, int(side_channels)
        widths = [base * 2**i for i in range(levels)]
        self.down = nn.ModuleList()
        cin = channels
        for i, w in enumerate(widths):
            self.down.append(_block(cin + (self.side_channels if i == levels - 1 else 0), w))
            cin = w
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i in range(levels - 1, 0, -1):
            self.up.append(nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2))
            self.fuse.append(_block(2 * widths[i - 1], widths[i - 1]))
        self.head = nn.Conv2d(widths[0], channels, 1)

    def forward(self, x: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        if (side is None) != (self.side_channels == 0) or (side is not None and side.shape[1] != self.side_channels):
            raise ValueError(f"this U-Net takes side inputs of {self.side_channels} channels, got "
                             f"{None if side is None else tuple(side.shape)}")
        h, w = x.shape[-2:]
        m = 2 ** (self.levels - 1)
        ph, pw = (-h) % m, (-w) % m
        y = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        skips = []
        for i, blk in enumerate(self.down):
            if i:
                y = F.max_pool2d(y, 2)
            if side is not None and i == self.levels - 1:
                y = torch.cat([y, F.interpolate(side.to(y.dtype), size=y.shape[-2:], mode="nearest")], dim=1)
            y = blk(y)
            skips.append(y)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips[:-1]), strict=True):
            y = fuse(torch.cat([up(y), skip], dim=1))
        return torch.sigmoid(self.head(y))[..., :h, :w]


class LearnedInversion:
    """Attack A3: learn to invert an obfuscation from pairs the attacker makes itself.

    Parameters
    ----------
    obfuscate : callable
        Maps a batch ``(B, C, H, W)`` of the attacker's own originals (same dtype as passed to
        :meth:`fit`) to obfuscated images of the same shape, with the attacker's own randomness —
        e.g. ``visualmixer.VisualMixer(target_vfe=0.5)`` or any baseline.
    epochs : int
        Training epochs over the attacker's images (the most, with ``patience``).
    batch_size, lr : int, float
        Adam minibatch size and learning rate.
    base, levels : int
        U-Net width and depth.
    reobfuscate : bool
        Draw a fresh obfuscation of every image each epoch (more pairs; default False: one fixed
        obfuscation per image, as in our first calibration runs).
    loss : {"l1", "mse"}
        Reconstruction loss.
    val_fraction : float
        Share of the attacker's pairs held out to measure a validation loss after every epoch
        (0 = none). The curve is kept in :attr:`history` and :attr:`val_history`.
    patience : int, optional
        Stop when the validation loss has not improved for this many epochs and keep the best
        epoch's weights (needs ``val_fraction > 0``); None trains all ``epochs``.
    device : str or torch.device
        Where to train.
    seed : int, optional
        Seeds the network initialisation and minibatch order (not the obfuscation); the caller's
        global random state is left as it was.
    progress : bool
        Show a tqdm bar.
    """

    def __init__(
        self,
        obfuscate: Callable[[torch.Tensor], torch.Tensor],
        *,
        epochs: int = 4,
        batch_size: int = 64,
        lr: float = 2e-3,
        base: int = 16,
        levels: int = 3,
        reobfuscate: bool = False,
        loss: str = "l1",
        val_fraction: float = 0.0,
        patience: int | None = None,
        device: str | torch.device = "cpu",
        seed: int | None = 0,
        progress: bool = False,
    ):
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if loss not in ("l1", "mse"):
            raise ValueError(f"loss must be 'l1' or 'mse', got {loss!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if patience is not None and (patience < 1 or val_fraction == 0):
            raise ValueError("patience must be >= 1 and needs val_fraction > 0")
        self.val_fraction, self.patience = float(val_fraction), patience
        self.obfuscate = obfuscate
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.base, self.levels = int(base), int(levels)
        self.reobfuscate, self.loss = bool(reobfuscate), loss
        self.device = torch.device(device)
        self.seed = seed
        self.progress = progress
        self.net: UNet | None = None
        self.history: list[float] = []
        self.val_history: list[float] = []
        self.best_epoch: int | None = None

    def _pairs(self, x: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        outs = [self.obfuscate(x[s : s + chunk]) for s in range(0, x.shape[0], chunk)]
        return torch.cat([o if isinstance(o, torch.Tensor) else o.images for o in outs])

    def fit(self, images, labels=None) -> LearnedInversion:
        """Train on the attacker's own originals ``images`` ``(M, C, H, W)``; returns ``self``.

        ``labels`` is accepted and ignored (same signature as :meth:`Recognizer.fit`).
        """
        x, _ = add_batch_axis(images, "images")
        if x.shape[0] == 0:
            raise ValueError("LearnedInversion.fit needs at least one image")
        remake = (lambda: self._pairs(x)) if self.reobfuscate else None
        return self.fit_pairs(self._pairs(x), x, remake=remake)

    def fit_pairs(self, inputs: torch.Tensor, targets: torch.Tensor, *, remake=None,
                  side: torch.Tensor | None = None) -> LearnedInversion:
        """Train on explicit ``(protected, original)`` pairs, both ``(M, C, H, W)``; returns ``self``.

        For releases whose images are not one original each (mixing: the target of a collage is
        its main source). ``remake`` (optional) returns fresh ``inputs`` for every epoch. ``side``
        (optional, ``(M, S, h, w)``): what else the release gives about each protected image (e.g.
        a teacher's feature grid), joined to the U-Net's deepest level (:class:`UNet`); the attack
        then needs it for the victims too.
        """
        if inputs.shape != targets.shape or inputs.shape[0] == 0:
            raise ValueError(f"inputs and targets must share a non-empty shape, got {tuple(inputs.shape)} "
                             f"and {tuple(targets.shape)}")
        if side is not None and (side.ndim != 4 or side.shape[0] != inputs.shape[0]):
            raise ValueError(f"side must be (M, S, h, w) with M = {inputs.shape[0]}, got {tuple(side.shape)}")
        side_channels = 0 if side is None else int(side.shape[1])
        g = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        n_val = int(round(self.val_fraction * inputs.shape[0]))
        order = torch.randperm(inputs.shape[0], generator=g) if n_val else torch.arange(inputs.shape[0])
        val, fit_idx = order[:n_val], order[n_val:]
        self.net = init_model(lambda: UNet(inputs.shape[1], self.base, self.levels, side_channels),
                              seed=self.seed, device=self.device)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        crit = F.l1_loss if self.loss == "l1" else F.mse_loss
        self.history, self.val_history, self.best_epoch = [], [], None
        best, best_state, waited = float("inf"), None, 0
        for epoch in progress_iter(range(self.epochs), self.progress, "A3 inversion"):
            if epoch and remake is not None:
                inputs = remake()
            self.history.append(self._train_epoch(inputs, targets, side, fit_idx, opt, crit, g))
            if n_val:
                self.val_history.append(self._loss(inputs[val], targets[val], None if side is None else side[val],
                                                   crit))
                if self.val_history[-1] < best:
                    best, waited, self.best_epoch = self.val_history[-1], 0, epoch
                    best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
                else:
                    waited += 1
                    if self.patience is not None and waited >= self.patience:
                        break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        return self

    def _side(self, side, idx):
        return None if side is None else float_batch(side[idx], self.device)

    def _train_epoch(self, inputs, targets, side, fit_idx, opt, crit, g) -> float:
        self.net.train()
        total, count = 0.0, 0
        for idx in batches(fit_idx.shape[0], self.batch_size, g):
            idx = fit_idx[idx]
            inp = float_batch(inputs[idx], self.device)
            tgt = float_batch(targets[idx], self.device)
            opt.zero_grad(set_to_none=True)
            loss = crit(self.net(inp, self._side(side, idx)), tgt)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        return total / max(1, count)

    @torch.no_grad()
    def _loss(self, inputs, targets, side, crit, batch_size: int = 256) -> float:
        self.net.eval()
        total = 0.0
        for s in range(0, inputs.shape[0], batch_size):
            part = slice(s, s + batch_size)
            out = self.net(float_batch(inputs[part], self.device), self._side(side, part))
            total += float(crit(out, float_batch(targets[s : s + batch_size], self.device), reduction="sum"))
        return total / max(1, targets.numel())

    @torch.no_grad()
    def __call__(self, obfuscated, batch_size: int = 256, *, side: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruct victims' originals from their obfuscated images; float32 ``(N, C, H, W)``.

        ``side``: the victims' side input ``(N, S, h, w)``, needed exactly when :meth:`fit_pairs` had one.
        """
        if self.net is None:
            raise ValueError("call fit() on the attacker's own images before attacking")
        x, _ = add_batch_axis(obfuscated, "obfuscated")
        if (side is None) != (self.net.side_channels == 0) or (side is not None and side.shape[0] != x.shape[0]):
            raise ValueError(f"the attack was trained with side inputs of {self.net.side_channels} channels; "
                             f"side must be (N = {x.shape[0]}, {self.net.side_channels}, h, w), got "
                             f"{None if side is None else tuple(side.shape)}")
        outs = [
            self.net(to_float(x[s : s + batch_size].to(self.device)), self._side(side, slice(s, s + batch_size))).cpu()
            for s in range(0, x.shape[0], batch_size)
        ]
        return torch.cat(outs) if outs else torch.zeros(x.shape, dtype=torch.float32)
