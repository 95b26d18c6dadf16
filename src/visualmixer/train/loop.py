"""Training and evaluation on obfuscated images (SPEC §7).

Protocol
--------
* **offline**: the training set is obfuscated once, image ``i`` with the subkey of id ``i``.
* **online**: every epoch each training batch is re-obfuscated with the subkey of id
  ``(i, epoch)`` (a new shuffle per epoch, like augmentation): on the training device in the
  training process, or, with ``loader_workers > 0``, on the CPU in DataLoader worker processes
  that prepare the next batches while the model trains (the same bytes either way).
* **test**: every test image is obfuscated once, each with its own key the model never sees;
  with ``target_vfe=None`` nothing is obfuscated (the clean baseline, same everything else).

Keys: by default the training key is ``Key.from_seed(seed)`` and the test images are shuffled
with an independent key derived from it (ids ``("test", i)``), so a run is deterministic for a
seed on CPU. These keys are NOT secret (experiments). With ``secret_keys=True`` the training
key comes from the OS CSPRNG (saved as ``key`` with mode 0600 in the output directory so a
resumed run can continue) and test images are obfuscated with fresh randomness (``key=None``).

Outputs in ``out/``: ``seed<S>/checkpoint.pt`` (after every epoch, written atomically),
``seed<S>/history.json`` (with the loss of every step), ``metrics.json`` (config, per-seed
histories, mean ± spread) and ``curves.png`` (learning curves).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from visualmixer.data.datasets import ImageSet, load_dataset
from visualmixer.train.models import build_model
from visualmixer.train.optim import STAdam

__all__ = [
    "MODES",
    "OPTIMIZERS",
    "TrainConfig",
    "TrainingDiverged",
    "obfuscate_set",
    "resolve_device",
    "train",
    "train_seed",
]

OPTIMIZERS = ("st-adam", "adam", "sgd")
MODES = ("offline", "online")
_DEFAULT_LR = {"st-adam": 1e-3, "adam": 1e-3, "sgd": 0.05}


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (also stored in checkpoints and metrics.json).

    Parameters
    ----------
    data : str
        Data set name (see :data:`visualmixer.data.datasets.DATASET_NAMES`).
    model : str
        ``"cnn"``, ``"resnet18"`` or ``"shufflenet"``.
    target_vfe : float or None
        Target VFE of the obfuscation; None trains and tests on the original images.
    mode : {"offline", "online"}
    optimizer : {"st-adam", "adam", "sgd"}
        ``adam`` is ``torch.optim.AdamW`` (betas 0.9, 0.999), ``sgd`` has momentum ``momentum``.
    lr : float, optional
        Default 1e-3 for the Adam variants, 0.05 for SGD.
    epochs, batch_size : int
    seeds : sequence of int
        One run per seed (model init, batch order, keys).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    out : str
        Output directory.
    data_root : str, optional
        Data directory for the loaders.
    channels : {1, 3, None}
        Feed grey data as 1 channel or replicated to 3 (None: the set's own).
    image_size : int, optional
        Crop side for ``photos``, resize side for ``imagefolder``.
    train_size, test_size : int, optional
        Use a seeded random subset of this many images (the same subset for every seed).
    weight_decay, momentum : float
    region : int, optional
        Region side passed to ``obfuscate`` (default: its size rule).
    secret_keys : bool
        Use an OS-random training key and fresh randomness for the test images (not
        deterministic); see the module docstring.
    obfuscate_batch : int
        Images per ``obfuscate`` call when obfuscating a whole set.
    loader_workers : int
        Online mode only: obfuscate the training batches in this many DataLoader worker
        processes (on the CPU, beside the training step) instead of in the training process.
        The batches are identical, so results do not change; 0 (default) obfuscates in the
        training process, on the training device.
    target_acc : float, optional
        Test accuracy (in [0, 1]) for the "epochs to target" metric.
    resume : bool
        Continue from ``seed<S>/checkpoint.pt`` where it exists.
    progress : bool
        Show a tqdm progress bar per epoch.
    """

    data: str = "fashion-mnist"
    model: str = "cnn"
    target_vfe: float | None = 0.5
    mode: str = "offline"
    optimizer: str = "adam"  # ST-Adam did not beat Adam in docs/results.md
    lr: float | None = None
    epochs: int = 3
    batch_size: int = 128
    seeds: Sequence[int] = (0,)
    device: str = "cpu"
    out: str = "out/train"
    data_root: str | None = None
    channels: int | None = None
    image_size: int | None = None
    train_size: int | None = None
    test_size: int | None = None
    weight_decay: float = 0.0
    momentum: float = 0.9
    region: int | None = None
    secret_keys: bool = False
    obfuscate_batch: int = 1024
    loader_workers: int = 0
    target_acc: float | None = None
    resume: bool = False
    progress: bool = True
    # filled in by validate()
    extra: dict = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        """Check the options; fill the default learning rate. Returns self."""
        from visualmixer.train.models import MODELS

        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; valid: {', '.join(MODELS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}"
            )
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid: {', '.join(MODES)}")
        if self.target_vfe is not None and not 0.0 <= float(self.target_vfe) <= 1.0:
            raise ValueError(f"target_vfe must be in [0, 1] or None, got {self.target_vfe}")
        for name in ("epochs", "batch_size", "obfuscate_batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        if int(self.loader_workers) < 0:
            raise ValueError(f"loader_workers must be >= 0, got {self.loader_workers}")
        if self.lr is None:
            self.lr = _DEFAULT_LR[self.optimizer]
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        self.seeds = [int(s) for s in self.seeds]
        resolve_device(self.device)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` for ``device``; a clear ValueError when CUDA is asked for but absent."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {device} was requested but CUDA is not available here "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False); use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    elif dev.type not in ("cpu", "mps"):
        raise ValueError(f"unsupported device {device!r}; use cpu or cuda")
    return dev


def _keys(cfg: TrainConfig, seed: int, seed_dir: Path):
    from visualmixer.core.keys import Key

    if cfg.secret_keys:
        path = seed_dir / "key"
        if path.exists():
            train_key = Key.load(path)
        else:
            train_key = Key.generate()
            train_key.save(path)
        return train_key, None
    train_key = Key.from_seed(int(seed))
    test_key = Key(train_key.subkey("evaluation", purpose="test-key"))
    return train_key, test_key


def obfuscate_set(
    images: torch.Tensor,
    target_vfe: float,
    *,
    key=None,
    ids: Sequence | None = None,
    region: int | None = None,
    batch: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Obfuscate a whole set in chunks of ``batch`` images (on ``images``' device).

    Parameters
    ----------
    images : torch.Tensor
        uint8 (N, C, H, W).
    target_vfe : float
    key : visualmixer.Key or None
        None: fresh OS randomness per image.
    ids : sequence, optional
        One id per image (required with ``key``).

    Returns
    -------
    images : torch.Tensor
        uint8 (N, C, H, W), obfuscated.
    vfe : torch.Tensor
        float64 (N,), achieved VFE per image.
    """
    from visualmixer.core.mixer import obfuscate

    out = torch.empty_like(images)
    vfes = torch.empty(images.shape[0], dtype=torch.float64)
    for s in range(0, images.shape[0], batch):
        kw = {} if key is None else {"key": key, "ids": list(ids[s : s + batch])}
        res = obfuscate(images[s : s + batch], target_vfe=target_vfe, region=region, **kw)
        out[s : s + batch] = res.images
        vfes[s : s + batch] = res.vfe.cpu()
    return out, vfes


def _obfuscate_online(images, indices, key, target_vfe, region, epoch):
    """One online-mode batch: ``images`` obfuscated with ids ``(index, epoch)`` in one call.

    Returns the obfuscated images and the sum of the achieved VFEs. The in-process path and the
    DataLoader workers both call this, so they produce the same batches.
    """
    from visualmixer.core.mixer import obfuscate

    res = obfuscate(images, key=key, ids=[(int(i), epoch) for i in indices],
                       target_vfe=target_vfe, region=region)
    return res.images, float(res.vfe.sum())


class _OnlineBatches(torch.utils.data.Dataset):
    """Online-mode training batches for DataLoader workers: ``ds[indices]`` is one batch.

    Returns ``(images, labels, vfe_sum)``: the batch obfuscated in one call with ids
    ``(index, epoch)`` — exactly what the in-process path computes — its labels, and the sum of
    the achieved VFEs.
    """

    def __init__(self, images, labels, key, target_vfe, region, epoch):
        self.images, self.labels = images, labels
        self.key, self.target_vfe, self.region, self.epoch = key, target_vfe, region, epoch

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, indices):
        idx = torch.as_tensor(indices)
        images, vfe_sum = _obfuscate_online(self.images[idx], idx, self.key, self.target_vfe,
                                            self.region, self.epoch)
        return images, self.labels[idx], vfe_sum


def _worker_batches(cfg, dev, x_cpu, y_cpu, key, batches, epoch):
    """Iterator over ``(images, labels, vfe_sum)`` made by ``cfg.loader_workers`` processes."""
    import multiprocessing

    ds = _OnlineBatches(x_cpu, y_cpu, key, cfg.target_vfe, cfg.region, epoch)
    # fork is cheapest and the workers never touch CUDA; elsewhere the platform's default
    ctx = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    return iter(torch.utils.data.DataLoader(
        ds, sampler=batches, batch_size=None, num_workers=int(cfg.loader_workers),
        multiprocessing_context=ctx, pin_memory=dev.type == "cuda",
        prefetch_factor=4))


def _make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "st-adam":
        return STAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999),
                                 weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@torch.no_grad()
def _evaluate(model, x_u8, y, mean, std, batch: int) -> tuple[float, float]:
    model.eval()
    loss_sum, correct = 0.0, 0
    for s in range(0, x_u8.shape[0], batch):
        xb = (x_u8[s : s + batch].float().div_(255) - mean) / std
        logits = model(xb)
        loss_sum += float(nn.functional.cross_entropy(logits, y[s : s + batch], reduction="sum"))
        correct += int((logits.argmax(1) == y[s : s + batch]).sum())
    n = max(1, x_u8.shape[0])
    return loss_sum / n, correct / n


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


_COMPAT = ("data", "model", "target_vfe", "mode", "optimizer", "lr", "batch_size", "train_size",
           "test_size", "channels", "image_size", "weight_decay", "momentum", "region",
           "secret_keys")  # fmt: skip


def train_seed(
    cfg: TrainConfig, seed: int, train_set: ImageSet, test_set: ImageSet
) -> dict:
    """Train and evaluate one seed; returns its result dict (also written to history.json).

    Parameters
    ----------
    cfg : TrainConfig
        A validated configuration.
    seed : int
    train_set, test_set : ImageSet
        Clean uint8 images; obfuscated here according to ``cfg``.

    Returns
    -------
    dict
        ``seed``, ``history`` (one dict per epoch: ``epoch``, ``train_loss``, ``train_acc``,
        ``test_loss``, ``test_acc``, ``loss_osc`` = mean |loss_t − loss_{t−1}| over the epoch's
        steps, ``epoch_s``, ``obfuscate_s`` (online: seconds spent obfuscating, or with
        ``loader_workers`` waiting for the next batch), ``train_vfe``), ``final_test_acc``,
        ``best_test_acc``, ``epochs_to_target``, ``train_vfe``, ``test_vfe``,
        ``setup_obfuscate_s``, ``step_losses`` (one training loss per step).

    Raises
    ------
    TrainingDiverged
        When a training loss is not finite (the previous epoch's checkpoint stays on disk).
    """
    dev = resolve_device(cfg.device)
    seed_dir = Path(cfg.out) / f"seed{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = seed_dir / "checkpoint.pt"
    state = None
    if ckpt_path.exists():
        if not cfg.resume:
            raise FileExistsError(
                f"{ckpt_path} exists; pass --resume to continue it, or choose another --out"
            )
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        old = state["config"]
        diff = [k for k in _COMPAT if old.get(k) != cfg.to_dict().get(k)]
        if diff:
            raise ValueError(
                f"cannot resume {ckpt_path}: options differ from the checkpoint's: "
                + ", ".join(f"{k} (was {old.get(k)!r})" for k in diff)
            )

    torch.manual_seed(seed)
    tau = cfg.target_vfe
    x_train, y_train = train_set.images, train_set.labels
    x_test, y_test = test_set.images, test_set.labels
    train_key, test_key = _keys(cfg, seed, seed_dir) if tau is not None else (None, None)
    from visualmixer.core.vfe import vfe

    t0 = time.perf_counter()
    train_vfe = test_vfe = None
    if tau is not None:
        x_test_dev = x_test.to(dev)
        test_ids = [("test", i) for i in range(len(test_set))]
        x_test_obf, v = obfuscate_set(x_test_dev, tau, key=test_key, ids=test_ids,
                                      region=cfg.region, batch=cfg.obfuscate_batch)
        test_vfe = float(v.mean())
        x_test = x_test_obf
        if cfg.mode == "offline":
            x_tr, v = obfuscate_set(x_train.to(dev), tau, key=train_key,
                                    ids=range(len(train_set)), region=cfg.region,
                                    batch=cfg.obfuscate_batch)
            x_train, train_vfe = x_tr, float(v.mean())
    else:
        test_vfe = float(vfe(x_test[: min(len(x_test), 2000)].to(dev)).mean())
    _sync(dev)
    setup_obf_s = time.perf_counter() - t0
    x_train, y_train = x_train.to(dev), y_train.to(dev)
    x_test, y_test = x_test.to(dev), y_test.to(dev)
    xf = x_train.float()
    mean = xf.mean(dim=(0, 2, 3), keepdim=True) / 255
    std = (xf.std(dim=(0, 2, 3), keepdim=True) / 255).clamp_min(1e-3)
    del xf

    model = build_model(cfg.model, x_train.shape[1], train_set.num_classes).to(dev)
    opt = _make_optimizer(cfg, model.parameters())
    history: list[dict] = []
    step_losses: list[float] = []
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = state["history"]
        step_losses = state.get("step_losses", [])
        start_epoch = state["epoch"] + 1
        torch.set_rng_state(state["rng"])

    n = x_train.shape[0]
    bs = cfg.batch_size
    online = tau is not None and cfg.mode == "online"
    in_workers = online and cfg.loader_workers > 0
    if in_workers:  # the workers read the clean images from host memory
        x_host, y_host = train_set.images, train_set.labels
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g)
        t_ep = time.perf_counter()
        obf_s, loss_sum, correct, osc, prev, vfe_sum = 0.0, 0.0, 0, 0.0, None, 0.0
        steps = range(0, n, bs)
        if in_workers:
            batches = _worker_batches(cfg, dev, x_host, y_host, train_key,
                                      [order[s : s + bs].tolist() for s in steps], epoch)
        if cfg.progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=f"seed {seed} epoch {epoch + 1}/{cfg.epochs}",
                         unit="batch", leave=False)
        for s in steps:
            idx = order[s : s + bs]
            if in_workers:  # obf_s: time the step waited for its batch
                t1 = time.perf_counter()
                xb, yb, v = next(batches)
                xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
                vfe_sum += v
                obf_s += time.perf_counter() - t1
            else:
                xb = x_train[idx.to(dev)]
                yb = y_train[idx.to(dev)]
            if online and not in_workers:
                _sync(dev)
                t1 = time.perf_counter()
                xb, v = _obfuscate_online(xb, idx, train_key, tau, cfg.region, epoch)
                vfe_sum += v
                _sync(dev)
                obf_s += time.perf_counter() - t1
            xb = (xb.float().div_(255) - mean) / std
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            lv = float(loss.detach())
            if not math.isfinite(lv):
                last = (f"{ckpt_path} (after epoch {history[-1]['epoch']})" if history
                        else "none (it diverged in the first epoch)")
                raise TrainingDiverged(
                    f"training loss became {lv} at seed {seed}, epoch {epoch + 1}, step "
                    f"{s // bs + 1}; stopped. Last good checkpoint: {last}. "
                    f"Try a lower --lr (now {cfg.lr})."
                )
            loss.backward()
            opt.step()
            step_losses.append(lv)
            loss_sum += lv * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            if prev is not None:
                osc += abs(lv - prev)
            prev = lv
        test_loss, test_acc = _evaluate(model, x_test, y_test, mean, std, 1024)
        _sync(dev)
        nsteps = math.ceil(n / bs)
        rec = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / n,
            "train_acc": correct / n,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "loss_osc": osc / max(1, nsteps - 1),
            "epoch_s": time.perf_counter() - t_ep,
            "obfuscate_s": obf_s,
            "train_vfe": (vfe_sum / n) if cfg.mode == "online" and tau is not None
            else train_vfe,
        }
        history.append(rec)
        _atomic_save(
            {"config": cfg.to_dict(), "epoch": epoch, "model": model.state_dict(),
             "optimizer": opt.state_dict(), "history": history, "step_losses": step_losses,
             "rng": torch.get_rng_state(), "norm": (mean.cpu(), std.cpu())},
            ckpt_path,
        )
        if cfg.progress:
            print(f"seed {seed} epoch {epoch + 1}/{cfg.epochs}: train loss "
                  f"{rec['train_loss']:.4f} acc {rec['train_acc']:.4f} | test acc "
                  f"{test_acc:.4f} | {rec['epoch_s']:.1f}s", flush=True)

    accs = [h["test_acc"] for h in history]
    to_target = None
    if cfg.target_acc is not None:
        to_target = next((h["epoch"] for h in history if h["test_acc"] >= cfg.target_acc), None)
    result = {
        "seed": seed,
        "history": history,
        "final_test_acc": accs[-1] if accs else None,
        "best_test_acc": max(accs) if accs else None,
        "epochs_to_target": to_target,
        "train_vfe": history[-1]["train_vfe"] if history else train_vfe,
        "test_vfe": test_vfe,
        "setup_obfuscate_s": setup_obf_s,
        "step_losses": step_losses,
    }
    # the step losses stay in the per-seed file (a few floats per step) so that curves can be
    # redrawn without the checkpoints; metrics.json leaves them out
    _write_json(result, seed_dir / "history.json")
    return result


def _summary(values: list[float]) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0}
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
    }


def load_sets(cfg: TrainConfig) -> tuple[ImageSet, ImageSet]:
    """The (train, test) sets for ``cfg``, subset to ``train_size`` / ``test_size`` (seed 0)."""
    kw = dict(root=cfg.data_root, channels=cfg.channels, size=cfg.image_size)
    train_set = load_dataset(cfg.data, "train", **kw).subset(cfg.train_size, seed=0)
    test_set = load_dataset(cfg.data, "test", **kw).subset(cfg.test_size, seed=1)
    return train_set, test_set


def train(cfg: TrainConfig, sets: tuple[ImageSet, ImageSet] | None = None) -> dict:
    """Run ``cfg`` for every seed; write ``metrics.json`` and ``curves.png`` in ``cfg.out``.

    Parameters
    ----------
    cfg : TrainConfig
    sets : (ImageSet, ImageSet), optional
        Pre-loaded clean (train, test) sets; default: loaded from ``cfg.data``.

    Returns
    -------
    dict
        ``config``, ``runs`` (one result per seed, see :func:`train_seed`, without the step
        losses) and ``summary`` (mean/std/min/max over seeds of the final and best test
        accuracy, the loss oscillation of the last epoch, the epoch time and the VFEs).
    """
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train_set, test_set = sets if sets is not None else load_sets(cfg)
    runs = [train_seed(cfg, s, train_set, test_set) for s in cfg.seeds]
    summary = {
        "final_test_acc": _summary([r["final_test_acc"] for r in runs]),
        "best_test_acc": _summary([r["best_test_acc"] for r in runs]),
        "last_epoch_loss_osc": _summary([r["history"][-1]["loss_osc"] for r in runs]),
        "epoch_s": _summary([statistics.fmean(h["epoch_s"] for h in r["history"])
                             for r in runs]),
        "train_vfe": _summary([r["train_vfe"] for r in runs]),
        "test_vfe": _summary([r["test_vfe"] for r in runs]),
        "epochs_to_target": _summary([r["epochs_to_target"] for r in runs]),
    }
    metrics = {
        "config": cfg.to_dict(),
        "train_images": len(train_set),
        "test_images": len(test_set),
        "runs": [{k: v for k, v in r.items() if k != "step_losses"} for r in runs],
        "summary": summary,
    }
    _write_json(metrics, out / "metrics.json")
    plot_curves({_label(cfg): runs}, out / "curves.png")
    return metrics


def _label(cfg: TrainConfig) -> str:
    t = "clean" if cfg.target_vfe is None else f"VFE {cfg.target_vfe}"
    return f"{cfg.model} {t} {cfg.mode if cfg.target_vfe is not None else ''} {cfg.optimizer}"


def plot_curves(groups: dict[str, list[dict]], path: str | os.PathLike) -> Path:
    """Learning curves: test accuracy per epoch and smoothed step loss, one colour per group.

    Parameters
    ----------
    groups : dict
        Label -> list of per-seed results (as returned by :func:`train_seed`).
    path : path-like
        PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for ci, (label, runs) in enumerate(groups.items()):
        color = f"C{ci % 10}"
        for ri, r in enumerate(runs):
            ep = [h["epoch"] for h in r["history"]]
            ax1.plot(ep, [100 * h["test_acc"] for h in r["history"]], "o-", color=color,
                     alpha=0.8, label=label if ri == 0 else None)
            sl = torch.tensor(r.get("step_losses") or [float("nan")])
            k = max(1, min(25, len(sl) // 20))
            smooth = torch.nn.functional.avg_pool1d(sl.view(1, 1, -1), k, 1).flatten()
            ax2.plot(smooth.numpy(), color=color, alpha=0.6, label=label if ri == 0 else None)
    from matplotlib.ticker import MaxNLocator

    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("test accuracy (%)")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    ax2.set_xlabel("step")
    ax2.set_ylabel("training loss (moving average)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
