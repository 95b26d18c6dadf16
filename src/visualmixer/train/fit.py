"""One training loop for every classifier the project trains.

:func:`fit_classifier` is the only minibatch loop in the library: ``visualmixer train``
(:func:`visualmixer.train.loop.train_seed`), distillation, DP-SGD (:mod:`visualmixer.train.dpsgd`),
the federated client's local step, and the audit's A4 / utility classifiers all call it. It is
framework-thin, in the manner of Opacus: it takes standard objects (a model, an optimizer, tensors or
a ``DataLoader``) and adds only what every caller needed — per-epoch fresh data (online
obfuscation), step-loss history, a stop on a non-finite loss, and callbacks for evaluation.

Randomness never leaks into the caller's global state: batch order comes from a local
``torch.Generator``; randomness that code inside the loop draws from torch's global generator
(dropout, Opacus noise, a ``DataLoader`` without a generator) runs inside
``torch.random.fork_rng``, seeded from ``seed``; :func:`init_model` does the same for weight
initialisation.

>>> import torch
>>> x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 2, (64,))
>>> model = init_model(lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)), seed=0)
>>> state = torch.get_rng_state()
>>> res = fit_classifier(model, (x, y), epochs=2, batch_size=16, seed=0)
>>> len(res.step_losses), len(res.epochs), torch.equal(state, torch.get_rng_state())
(8, 2, True)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visualmixer.core.imageops import to_float
from visualmixer.tools.progress import progress as _progress

__all__ = [
    "EpochStats",
    "FitResult",
    "LR_SCHEDULES",
    "ShuffledBatches",
    "StepInfo",
    "TrainingDiverged",
    "channel_normaliser",
    "check_lr_schedule",
    "evaluate_classifier",
    "fit_classifier",
    "init_model",
    "isolated_rng",
    "normalise",
]


#: Learning-rate schedules by name: ``(epoch, epochs) -> factor`` on each parameter group's initial
#: lr, set at the start of every epoch — a closed form of the epoch, so a resumed run continues the
#: same curve. ``"cosine"`` is ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=epochs)`` stepped
#: once per epoch (as torchvision's reference scripts do).
LR_SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": lambda epoch, epochs: 1.0,
    "cosine": lambda epoch, epochs: 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)),
}


def check_lr_schedule(name: str) -> str:
    """``name`` if it is one of :data:`LR_SCHEDULES`, else a ValueError naming the valid ones."""
    if name not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule={name!r} is not known; valid: {', '.join(LR_SCHEDULES)}")
    return name


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the optimizer step of that batch was not taken.

    Attributes ``epoch`` (0-based), ``step`` (0-based within the epoch) and ``loss``.
    """

    def __init__(self, message: str, *, epoch: int = -1, step: int = -1, loss: float = float("nan")):
        super().__init__(message)
        self.epoch, self.step, self.loss = epoch, step, loss


@dataclass
class StepInfo:
    """What ``on_step`` receives after every optimizer step."""

    epoch: int  #: 0-based epoch
    step: int  #: 0-based step within the epoch
    loss: float  #: the batch's training loss
    size: int  #: images in the batch
    correct: int  #: of them classified right (argmax of the logits, before the step)
    batch: tuple  #: the batch as the data yielded it (extra fields, e.g. a VFE, at the end)


@dataclass
class EpochStats:
    """One epoch's training statistics (``on_epoch_end`` receives it)."""

    epoch: int  #: 0-based epoch
    loss: float  #: mean training loss per image
    accuracy: float  #: training accuracy
    samples: int  #: images seen
    steps: int  #: optimizer steps
    loss_osc: float  #: mean |loss_t - loss_{t-1}| over the epoch's steps
    seconds: float  #: wall time of the epoch's training (``on_epoch_end`` not included)


@dataclass
class FitResult:
    """What :func:`fit_classifier` returns (the model is trained in place)."""

    step_losses: list[float] = field(default_factory=list)  #: one loss per step, every epoch
    epochs: list[EpochStats] = field(default_factory=list)


class ShuffledBatches:
    """A batch sampler: index tensors of ``batch_size`` over ``range(n)``, a new order per epoch.

    Usable directly or as a ``DataLoader(..., batch_sampler=...)``.

    Parameters
    ----------
    n, batch_size : int
    generator : torch.Generator, optional
        Draws one permutation per iteration (continuing across epochs). Default: seeded from
        the OS.
    epoch_seed : callable, optional
        ``epoch -> int``: the order of epoch ``e`` is ``randperm(n)`` of a generator seeded with
        ``epoch_seed(e)`` (set by :meth:`set_epoch`), so a resumed run sees the same orders.
    shuffle : bool
        False: ``0..n-1`` in order.
    """

    def __init__(self, n: int, batch_size: int, *, generator: torch.Generator | None = None,
                 epoch_seed: Callable[[int], int] | None = None, shuffle: bool = True):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.shuffle = int(n), int(batch_size), bool(shuffle)
        self.epoch_seed, self.epoch = epoch_seed, 0
        self.generator = generator if generator is not None else _os_generator()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (used with ``epoch_seed``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        if not self.shuffle:
            order = torch.arange(self.n)
        elif self.epoch_seed is not None:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(int(self.epoch_seed(self.epoch))))
        else:
            order = torch.randperm(self.n, generator=self.generator)
        yield from order.split(self.batch_size)


def _os_generator() -> torch.Generator:
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1))


@contextmanager
def isolated_rng(seed: int | None, device: str | torch.device = "cpu"):
    """Run a block with torch's global RNG seeded from ``seed``, restoring the caller's state after.

    ``seed=None`` seeds from the OS. With a CUDA ``device`` that device's generator is seeded,
    saved and restored too (other devices are not touched).
    """
    dev = torch.device(device)
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    s = int(seed) if seed is not None else int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(s)
        for d in devices:
            torch.cuda.default_generators[d].manual_seed(s)
        yield


def init_model(factory: Callable[[], nn.Module], *, seed: int | None, device: str | torch.device = "cpu") -> nn.Module:
    """``factory()`` with its random initialisation seeded by ``seed``, moved to ``device``.

    The weights equal those ``factory()`` draws right after seeding torch's global generator with
    ``seed``, but the caller's global RNG state is left as it was.
    """
    with isolated_rng(seed):
        model = factory()
    return model.to(device)


def channel_normaliser(images: torch.Tensor, *, shared: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(mean, std)`` ``(1, C, 1, 1)`` in [0, 1] units of uint8 images ``(N, C, H, W)``
    (on their device; std at least 1e-3), for the model input ``(x / 255 - mean) / std``.

    With ``shared`` (colour images) one mean and standard deviation over all channels, repeated per
    channel: a model blind to the channel-order shuffle needs every channel normalised alike
    (:data:`visualmixer.train.models.SHARED_NORMALISATION`). Grey images are the same either way.
    """
    xf = images.float()
    dims = (0, 1, 2, 3) if shared and images.shape[1] > 1 else (0, 2, 3)
    mean = (xf.mean(dim=dims, keepdim=True) / 255).expand(1, images.shape[1], 1, 1).contiguous()
    std = (xf.std(dim=dims, keepdim=True) / 255).clamp_min(1e-3).expand(1, images.shape[1], 1, 1).contiguous()
    return mean, std


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 batch ``(B, C, H, W)`` -> the model input ``(x / 255 - mean) / std`` on ``mean``'s device
    (``mean``, ``std`` from :func:`channel_normaliser`)."""
    return (images.to(mean.device, non_blocking=True).float().div(255) - mean) / std


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


class _TensorBatches:
    """``(images[idx], labels[idx])`` for each index batch of ``batches`` (indices on the data's device)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batches: Iterable):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"data: {images.shape[0]} images but {labels.shape[0]} labels")
        self.images, self.labels, self.batches = images, labels, batches

    def __iter__(self):
        for idx in self.batches:
            idx = torch.as_tensor(idx)
            yield self.images[idx.to(self.images.device)], self.labels[idx.to(self.labels.device)]

    def __len__(self) -> int:
        return len(self.batches)


def _epoch_batches(data, epoch: int, batch_size: int, batches, generator):
    """The iterable of batches for one epoch (see ``data`` in :func:`fit_classifier`)."""
    if callable(data) and not isinstance(data, (nn.Module, torch.utils.data.Dataset)):
        data = data(epoch)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        images, labels = data
        if batches is None:
            batches = ShuffledBatches(images.shape[0], batch_size, generator=generator)
        # (N,) class indices, or (N, K) per-class targets (soft labels; (N, views, K) for ``augment``) as they are
        targets = labels if labels.ndim >= 2 else labels.reshape(-1)
        return _TensorBatches(images, targets, batches), batches
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        if batches is None:
            batches = ShuffledBatches(len(data), batch_size, generator=generator)  # type: ignore[arg-type]
        loader = torch.utils.data.DataLoader(data, batch_sampler=batches, generator=torch.Generator())
        return loader, batches
    return data, batches


def _set_epoch(objs: Iterable[Any], epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on each object that has it (samplers, ObfuscatedDataset), once each."""
    seen: set[int] = set()
    for o in objs:
        if o is not None and id(o) not in seen and callable(getattr(o, "set_epoch", None)):
            seen.add(id(o))
            o.set_epoch(epoch)


def fit_classifier(
    model: nn.Module,
    data,
    *,
    epochs: int,
    batch_size: int = 128,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
    batches: Iterable | None = None,
    start_epoch: int = 0,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
    stop_on_nonfinite: bool = True,
    seed: int | None = None,
    progress: bool = False,
    desc: str = "training",
    lr_schedule: str = "constant",
    augment: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> FitResult:
    """Train ``model`` (in place) for epochs ``start_epoch .. epochs-1``; return the loss history.

    Parameters
    ----------
    model : torch.nn.Module
        Maps a float batch ``(B, C, H, W)`` to logits ``(B, K)``; already on ``device``.
    data
        One of: a pair ``(images, labels)`` of tensors ``(N, C, H, W)`` (uint8 or float) and
        ``(N,)`` int64 — or ``(N, K)`` float per-class targets, which the default loss reads as
        class probabilities (``F.cross_entropy``) and accuracy compares by their argmax —
        batched by ``batches``; a callable ``epoch -> (images, labels)`` called
        at the start of every epoch (fresh data per epoch, e.g. a whole set protected anew); a
        map-style ``Dataset`` (loaded with ``batches`` as batch sampler; an
        :class:`~visualmixer.data.wrapper.ObfuscatedDataset` fetches each batch in one call); or
        any re-iterable of ``(images, labels, *extra)`` batches, e.g. a ``DataLoader``. Before
        each epoch ``set_epoch(epoch)`` is called on the data, its ``dataset``, its sampler /
        batch sampler and ``batches`` where they have one (online re-keying, per-epoch orders).
    epochs : int
        Total epochs (the last epoch index is ``epochs - 1``).
    batch_size : int
        For tensors and datasets when ``batches`` is not given.
    optimizer : torch.optim.Optimizer, optional
        Anything with ``zero_grad(set_to_none=True)`` and ``step()``. Default
        ``torch.optim.Adam(model.parameters(), lr=lr)``.
    device : str or torch.device
        Batches (after ``prepare``) and labels are moved here.
    generator : torch.Generator, optional
        Batch order for tensors and datasets (default: seeded with ``seed``, else from the OS).
    batches : iterable, optional
        A batch sampler (index tensors or lists) overriding the default
        :class:`ShuffledBatches`.
    start_epoch : int
        First epoch to run (resuming).
    prepare : callable, optional
        ``images batch -> model input`` (normalisation, a per-batch protection). Default:
        uint8 to float in [0, 1] (floats unchanged). Runs before the move to ``device``.
    loss_fn : callable, optional
        ``(logits, labels, inputs) -> scalar loss``; default cross-entropy. ``inputs`` is the
        prepared batch, for losses that need it (a distillation teacher's logits).
    on_epoch_start : callable, optional
        ``epoch -> None`` before the epoch's data is drawn.
    on_step : callable, optional
        :class:`StepInfo` after every optimizer step.
    on_epoch_end : callable, optional
        :class:`EpochStats` after every epoch (evaluate, checkpoint, print).
    stop_on_nonfinite : bool
        Raise :class:`TrainingDiverged` (before the step) when a loss is NaN or infinite.
    seed : int, optional
        Seeds torch's global RNG for the loop's duration only (dropout, Opacus noise, loaders
        without generator), and the default ``generator``. None: from the OS.
    progress : bool
        A progress bar per epoch (:func:`visualmixer.tools.progress.progress`).
    desc : str
        The bar's label.
    lr_schedule : str
        One of :data:`LR_SCHEDULES`: ``"constant"`` (default) or ``"cosine"`` (from each parameter
        group's lr at the first epoch down to 0 after the last, set before every epoch).
    augment : callable, optional
        ``(inputs, targets) -> (inputs, targets)`` on each prepared training batch on ``device``,
        before the model and ``loss_fn`` see it (e.g. :class:`~visualmixer.train.augment.RegionGridFlip`;
        its ``set_epoch`` is called too).

    Returns
    -------
    FitResult
        ``step_losses`` (float per step) and ``epochs`` (:class:`EpochStats` per epoch run).

    Notes
    -----
    Long only through this docstring: the body is the epoch loop; one pass is :func:`_run_epoch`.

    Raises
    ------
    TrainingDiverged
        With ``stop_on_nonfinite``, on the first non-finite loss.
    """
    if int(epochs) < 0 or int(start_epoch) < 0:
        raise ValueError(f"epochs and start_epoch must be >= 0, got {epochs} and {start_epoch}")
    device = torch.device(device)
    check_lr_schedule(lr_schedule)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # "constant" leaves the optimizer's lr alone (a caller's own scheduler keeps working)
    schedule = None if lr_schedule == "constant" else LR_SCHEDULES[lr_schedule]
    if schedule is not None:
        for group in optimizer.param_groups:  # the curve's start, kept in the optimizer's state (resume)
            group.setdefault("initial_lr", group["lr"])
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else _os_generator()
    prepare = to_float if prepare is None else prepare
    loss_fn = _cross_entropy if loss_fn is None else loss_fn
    result = FitResult()
    with isolated_rng(seed, device):
        for epoch in range(int(start_epoch), int(epochs)):
            t0 = time.perf_counter()
            for group in optimizer.param_groups if schedule is not None else ():
                group["lr"] = group["initial_lr"] * schedule(epoch, int(epochs))
            if on_epoch_start is not None:
                on_epoch_start(epoch)
            loader, batches = _epoch_batches(data, epoch, batch_size, batches, generator)
            _set_epoch((data, loader, getattr(loader, "dataset", None), getattr(loader, "sampler", None),
                        getattr(loader, "batch_sampler", None), batches, augment), epoch)
            stats = _run_epoch(model, loader, optimizer, epoch, device, prepare, augment, loss_fn, on_step,
                               stop_on_nonfinite, result.step_losses,
                               _progress_label(progress, desc, epoch, epochs))
            stats.seconds = time.perf_counter() - t0
            result.epochs.append(stats)
            if on_epoch_end is not None:
                on_epoch_end(stats)
    return result


def _progress_label(enabled: bool, desc: str, epoch: int, epochs: int) -> str | None:
    return f"{desc} epoch {epoch + 1}/{epochs}" if enabled else None


def _run_epoch(model, loader, optimizer, epoch, device, prepare, augment, loss_fn, on_step, stop, step_losses,
               bar) -> EpochStats:
    """One pass over ``loader``: forward, loss, finite check, backward, step."""
    model.train()
    loss_sum, correct, samples, steps, osc, prev = 0.0, 0, 0, 0, 0.0, None
    it = _progress(loader, enabled=bar is not None, desc=bar or "", unit="batch")
    for batch in it:
        xb, yb = batch[0], batch[1]
        if len(xb) == 0:  # Poisson sampling (DP-SGD) may draw an empty batch
            continue
        inputs = prepare(xb).to(device, non_blocking=True)
        yb = yb.to(device, non_blocking=True)
        if augment is not None:
            inputs, yb = augment(inputs, yb)
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = loss_fn(logits, yb, inputs)
        lv = float(loss.detach())
        if stop and not math.isfinite(lv):
            raise TrainingDiverged(f"training loss became {lv} at epoch {epoch + 1}, step {steps + 1}",
                                   epoch=epoch, step=steps, loss=lv)
        loss.backward()
        optimizer.step()
        n_ok = int((logits.detach().argmax(1) == (yb if yb.ndim == 1 else yb.argmax(1))).sum())
        step_losses.append(lv)
        loss_sum += lv * len(xb)
        correct += n_ok
        samples += len(xb)
        if prev is not None:
            osc += abs(lv - prev)
        prev = lv
        if on_step is not None:
            on_step(StepInfo(epoch, steps, lv, len(xb), n_ok, tuple(batch)))
        steps += 1
    return EpochStats(epoch, loss_sum / max(1, samples), correct / max(1, samples), samples, steps,
                      osc / max(1, steps - 1), 0.0)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                        prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        batch_size: int = 1024) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy)`` of ``model`` on ``images`` ``(N, C, H, W)``, in eval mode.

    ``prepare`` maps an image batch to the model input (default uint8 to float in [0, 1]); the
    labels ``(N,)`` must be on the device the model's outputs are on.
    """
    prepare = to_float if prepare is None else prepare
    model.eval()
    loss_sum, correct = 0.0, 0
    for s in range(0, images.shape[0], int(batch_size)):
        logits = model(prepare(images[s : s + batch_size]))
        yb = labels[s : s + batch_size]
        loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    n = max(1, images.shape[0])
    return loss_sum / n, correct / n
