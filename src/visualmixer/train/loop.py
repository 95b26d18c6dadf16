"""Training and evaluation on obfuscated images.

Protocol
--------
* **offline**: the training set is obfuscated once, image ``i`` with the subkey of id ``i``.
* **online**: every epoch each training batch is re-obfuscated with the subkey of id
  ``(i, epoch)`` (a new shuffle per epoch, like augmentation): on the training device in the
  training process, or, with ``loader_workers > 0``, on the CPU in worker processes that
  prepare the next batches while the model trains (the same bytes either way).
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

import io
import os
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from visualmixer.core.mixing import mix
from visualmixer.core.optional import require
from visualmixer.core.regions import resolve_region
from visualmixer.core.vfe import vfe
from visualmixer.data.datasets import ImageSet, load_dataset
from visualmixer.data.wrapper import obfuscate_set
from visualmixer.tools.lock import RunLock
from visualmixer.train.augment import make_augment
from visualmixer.train.checkpoint import load_checkpoint, save_checkpoint, write_bytes, write_json
from visualmixer.train.config import MODES, OPTIMIZERS, TrainConfig, resolve_device
from visualmixer.train.feed import MixedEpochs, WaitedLoader, sync, training_feed
from visualmixer.train.fit import (
    EpochStats,
    StepInfo,
    TrainingDiverged,
    channel_normaliser,
    evaluate_classifier,
    fit_classifier,
    init_model,
    normalise,
)
from visualmixer.train.models import SHARED_NORMALISATION, build_model, check_image_size
from visualmixer.train.optim import STAdam
from visualmixer.train.soft_labels import read_soft_labels, soft_label_loss, soft_target_loss, teacher_for

__all__ = [
    "MODES",
    "OPTIMIZERS",
    "TrainConfig",
    "TrainingDiverged",
    "load_sets",
    "obfuscate_set",
    "plot_curves",
    "resolve_device",
    "train",
    "train_seed",
]


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


def _make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "st-adam":
        return STAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999),
                                 weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)





@dataclass
class _SeedData:
    """One seed's images on the training device: the training set (clean for online mode), the
    obfuscated test set, the normalisation and what obfuscating them cost."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    train_key: object
    train_vfe: float | None
    test_vfe: float
    setup_obfuscate_s: float

    def normalise(self, xb: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> normalised float model input on the data's device."""
        return normalise(xb, self.mean, self.std)


def _prepare_data(cfg: TrainConfig, seed: int, seed_dir: Path, train_set: ImageSet, test_set: ImageSet,
                  dev: torch.device) -> _SeedData:
    """Keys, the test set obfuscated once, the training set obfuscated once (offline mode), the
    per-channel normalisation of the training images."""
    tau = cfg.target_vfe
    x_train, x_test = train_set.images, test_set.images
    train_key, test_key = _keys(cfg, seed, seed_dir) if tau is not None else (None, None)
    t0 = time.perf_counter()
    train_vfe = None
    if tau is not None:
        test_ids = [("test", i) for i in range(len(test_set))]
        x_test, v = obfuscate_set(x_test.to(dev), tau, key=test_key, ids=test_ids,
                                  region=cfg.region, batch=cfg.obfuscate_batch)
        test_vfe = float(v.mean())
        if cfg.mode == "offline" and cfg.mix:
            res = mix(x_train.to(dev), train_set.labels, key=train_key, ids=range(len(train_set)), k=int(cfg.mix),
                      grouping=cfg.mix_grouping, target_vfe=tau, region=cfg.region, share=cfg.mix_share,
                      balanced=cfg.mix_balanced, design=cfg.mix_design)
            x_train, train_vfe = res.images, float(res.vfe.mean())
        elif cfg.mode == "offline":
            x_train, v = obfuscate_set(x_train.to(dev), tau, key=train_key, ids=range(len(train_set)),
                                       region=cfg.region, batch=cfg.obfuscate_batch)
            train_vfe = float(v.mean())
    else:
        test_vfe = float(vfe(x_test[: min(len(x_test), 2000)].to(dev)).mean())
    sync(dev)
    setup_s = time.perf_counter() - t0
    x_train = x_train.to(dev)
    # a model (or teacher) blind to the channel-order shuffle is so only if all channels are normalised alike
    shared = cfg.model in SHARED_NORMALISATION or cfg.soft_labels in SHARED_NORMALISATION
    mean, std = channel_normaliser(x_train, shared=shared)
    return _SeedData(x_train, _training_targets(cfg, train_set).to(dev), x_test.to(dev), test_set.labels.to(dev), mean,
                     std, train_key, train_vfe, test_vfe, setup_s)


def _training_targets(cfg: TrainConfig, train_set: ImageSet) -> torch.Tensor:
    """What the model is fit to: the set's labels ``(N,)``, or with ``cfg.soft_label_file`` the
    released teacher's logits ``(N, K)`` (and its features, ``(N, K + D)``), joined on the set's file names."""
    if cfg.soft_label_file is None:
        return train_set.labels
    if not train_set.files:
        raise ValueError(f"soft_label_file={cfg.soft_label_file!r} needs a training set read from image files "
                         f"(imagefolder:PATH) to join its rows on; {train_set.name or 'this set'} has no file names")
    return read_soft_labels(cfg.soft_label_file, train_set.files, train_set.classes, views=cfg.augment,
                            features=bool(cfg.soft_label_features))


class _SeedLog:
    """The callbacks of one seed's run: step losses, the per-epoch record (with the test
    accuracy), the checkpoint after every epoch, one printed line per epoch."""

    def __init__(self, cfg: TrainConfig, seed: int, ckpt_path: Path, model, opt, data: _SeedData, feed,
                 state: dict | None):
        self.cfg, self.seed, self.ckpt_path = cfg, seed, ckpt_path
        self.model, self.opt, self.data, self.feed = model, opt, data, feed
        self.history: list[dict] = state["history"] if state else []
        self.step_losses: list[float] = state.get("step_losses", []) if state else []
        # online per-image obfuscation reports the VFE of every batch; online mixing per epoch
        self.online = cfg.target_vfe is not None and cfg.mode == "online" and not cfg.mix
        self.t0, self.vfe_sum = 0.0, 0.0

    def epoch_start(self, epoch: int) -> None:
        self.t0, self.vfe_sum = time.perf_counter(), 0.0
        if isinstance(self.feed, (WaitedLoader, MixedEpochs)):
            self.feed.seconds = 0.0

    def step(self, info: StepInfo) -> None:
        self.step_losses.append(info.loss)
        if self.online:
            self.vfe_sum += float(info.batch[2].sum())

    def epoch_end(self, stats: EpochStats) -> None:
        d, cfg = self.data, self.cfg
        test_loss, test_acc = evaluate_classifier(self.model, d.x_test, d.y_test, prepare=d.normalise, batch_size=1024)
        sync(d.mean.device)
        rec = {
            "epoch": stats.epoch + 1, "train_loss": stats.loss, "train_acc": stats.accuracy,
            "test_loss": test_loss, "test_acc": test_acc, "loss_osc": stats.loss_osc,
            "epoch_s": time.perf_counter() - self.t0,
            "obfuscate_s": self.feed.seconds if isinstance(self.feed, (WaitedLoader, MixedEpochs)) else 0.0,
            "train_vfe": (self.vfe_sum / max(1, stats.samples) if self.online
                          else self.feed.last_vfe if isinstance(self.feed, MixedEpochs) else d.train_vfe),
        }  # fmt: skip
        self.history.append(rec)
        save_checkpoint(
            {"config": cfg.to_dict(), "epoch": stats.epoch, "model": self.model.state_dict(),
             "optimizer": self.opt.state_dict(), "history": self.history, "step_losses": self.step_losses,
             "norm": (d.mean.cpu(), d.std.cpu())},
            self.ckpt_path,
        )
        if cfg.progress:
            print(f"seed {self.seed} epoch {stats.epoch + 1}/{cfg.epochs}: train loss "
                  f"{rec['train_loss']:.4f} acc {rec['train_acc']:.4f} | test acc "
                  f"{test_acc:.4f} | {rec['epoch_s']:.1f}s", flush=True)

    def diverged(self, exc: TrainingDiverged) -> TrainingDiverged:
        """The error to raise: where it diverged, the last good checkpoint, what to try."""
        last = (f"{self.ckpt_path} (after epoch {self.history[-1]['epoch']})" if self.history
                else "none (it diverged in the first epoch)")
        return TrainingDiverged(
            f"training loss became {exc.loss} at seed {self.seed}, epoch {exc.epoch + 1}, step "
            f"{exc.step + 1}; stopped. Last good checkpoint: {last}. Try a lower lr (now {self.cfg.lr}).",
            epoch=exc.epoch, step=exc.step, loss=exc.loss,
        )


def _seed_result(cfg: TrainConfig, seed: int, log: _SeedLog) -> dict:
    history, d = log.history, log.data
    accs = [h["test_acc"] for h in history]
    to_target = None
    if cfg.target_acc is not None:
        to_target = next((h["epoch"] for h in history if h["test_acc"] >= cfg.target_acc), None)
    return {
        "seed": seed,
        "history": history,
        "final_test_acc": accs[-1] if accs else None,
        "best_test_acc": max(accs) if accs else None,
        "epochs_to_target": to_target,
        "train_vfe": history[-1]["train_vfe"] if history else d.train_vfe,
        "test_vfe": d.test_vfe,
        "setup_obfuscate_s": d.setup_obfuscate_s,
        "step_losses": log.step_losses,
    }


def _soft_label_loss(cfg: TrainConfig, seed: int, seed_dir: Path, train_set: ImageSet, data: _SeedData, region: int,
                     dev: torch.device, model: torch.nn.Module, *, resuming: bool):
    """``(loss_fn, teacher test accuracy)`` with ``cfg.soft_labels`` (the teacher trained on the originals,
    saved as ``seed<S>/teacher.pt`` and reused on resume; with ``cfg.soft_label_features`` also
    matching its features on ``model``); with ``cfg.soft_label_file`` the loss on the released logits
    (the data's targets, :func:`_training_targets`); else ``(None, None)``."""
    if cfg.soft_label_file is not None:
        return soft_target_loss(cfg.soft_label_temperature, model=model, feature_weight=cfg.soft_label_features), None
    if cfg.soft_labels is None:
        return None, None
    path = seed_dir / "teacher.pt"
    saved = torch.load(path, map_location=dev, weights_only=True) if resuming and path.exists() else None
    teacher = teacher_for(cfg.soft_labels, train_set.images, train_set.labels, train_set.num_classes, region=region,
                          epochs=cfg.soft_label_epochs or cfg.epochs, batch_size=cfg.batch_size, seed=seed,
                          prepare=data.normalise, device=dev, state=saved, progress=cfg.progress,
                          lr_schedule=cfg.lr_schedule, augment=make_augment(cfg.augment, region=region, seed=seed))
    if saved is None:
        save_checkpoint(teacher.state_dict(), path)
    _, acc = evaluate_classifier(teacher, data.x_test, data.y_test, prepare=data.normalise, batch_size=1024)
    if cfg.progress:
        print(f"seed {seed}: teacher ({cfg.soft_labels}, trained on the original images) test acc {acc:.4f}",
              flush=True)
    loss = soft_label_loss(teacher, cfg.soft_label_temperature, model=model, feature_weight=cfg.soft_label_features)
    return loss, acc


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
        ``setup_obfuscate_s``, ``step_losses`` (one training loss per step); with
        ``cfg.soft_labels`` also ``teacher_test_acc`` (the owner's teacher on the same test images).

    Raises
    ------
    TrainingDiverged
        When a training loss is not finite (the previous epoch's checkpoint stays on disk).
    """
    dev = resolve_device(cfg.device)
    seed_dir = Path(cfg.out) / f"seed{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = seed_dir / "checkpoint.pt"
    state = load_checkpoint(cfg, ckpt_path)
    data = _prepare_data(cfg, seed, seed_dir, train_set, test_set, dev)
    if cfg.progress and cfg.target_vfe is not None:  # one-off, reported apart from the epoch times
        print(f"seed {seed}: obfuscated the {'training and ' if cfg.mode == 'offline' else ''}test images once "
              f"in {data.setup_obfuscate_s:.1f}s (not counted in the epoch times)", flush=True)
    region = resolve_region(cfg.region, *data.x_train.shape[-2:])  # the protection's grid
    model = init_model(lambda: build_model(cfg.model, data.x_train.shape[1], train_set.num_classes, region=region),
                       seed=seed, device=dev)
    if cfg.channels_last:  # (in place; the optimizer is made after it, on the same parameters)
        model.to(memory_format=torch.channels_last)
    opt = _make_optimizer(cfg, model.parameters())
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    resuming = state is not None
    loss_fn, teacher_acc = _soft_label_loss(cfg, seed, seed_dir, train_set, data, region, dev, model,
                                            resuming=resuming)
    feed, batches = training_feed(cfg, seed, data, train_set, dev)
    log = _SeedLog(cfg, seed, ckpt_path, model, opt, data, feed, state)
    try:
        fit_classifier(model, feed, epochs=cfg.epochs, optimizer=opt, device=dev, batches=batches,
                       start_epoch=state["epoch"] + 1 if state else 0, prepare=data.normalise, loss_fn=loss_fn,
                       on_epoch_start=log.epoch_start, on_step=log.step, on_epoch_end=log.epoch_end,
                       seed=seed, progress=cfg.progress, desc=f"seed {seed}", lr_schedule=cfg.lr_schedule,
                       augment=make_augment(cfg.augment, region=region, seed=seed))  # the grid soft-labels mirrors
    except TrainingDiverged as exc:
        raise log.diverged(exc) from exc
    finally:
        if hasattr(loss_fn, "remove"):  # a FeatureMatchingLoss's hooks on the model and the teacher
            loss_fn.remove()
        if hasattr(feed, "close"):  # the loader worker processes
            feed.close()
    result = _seed_result(cfg, seed, log)
    if teacher_acc is not None:
        result["teacher_test_acc"] = teacher_acc
    # the step losses stay in the per-seed file (a few floats per step) so that curves can be
    # redrawn without the checkpoints; metrics.json leaves them out
    write_json(result, seed_dir / "history.json")
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
        accuracy, the loss oscillation of the last epoch, the epoch time, the VFEs and, with soft
        labels, the teacher's test accuracy).
    """
    cfg.validate()
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out={cfg.out!r} is a file: give a folder for the run's outputs")
    out.mkdir(parents=True, exist_ok=True)
    with RunLock.for_destination(out, command="train"):  # a second run into out is refused, not mixed in
        return _train_locked(cfg, out, sets)


def _train_locked(cfg: TrainConfig, out: Path, sets: tuple[ImageSet, ImageSet] | None) -> dict:
    earlier = [p for p in (out / "metrics.json", *sorted(out.glob("seed*/checkpoint.pt"))) if p.exists()]
    if earlier and not cfg.resume:  # (another run's metrics.json would be replaced, its seeds mixed in)
        raise FileExistsError(f"{earlier[0]} exists: out={cfg.out!r} holds a run; pass resume=True (--resume) "
                              "to continue it, or choose another out")
    train_set, test_set = sets if sets is not None else load_sets(cfg)
    check_image_size(cfg.model, *train_set.images.shape[-2:])
    if cfg.mix and cfg.target_vfe is not None:  # (as the folder tool says of such a class)
        counts = torch.bincount(train_set.labels.cpu(), minlength=len(train_set.classes)).tolist()
        lone = [str(train_set.classes[c]) for c, n in enumerate(counts) if n == 1]
        if lone:
            warnings.warn(f"mix={cfg.mix}: {len(lone)} class(es) have a single training image ({', '.join(lone[:5])})"
                          ": it is only shuffled inside its regions, not mixed", UserWarning, stacklevel=3)
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
        "teacher_test_acc": _summary([r.get("teacher_test_acc") for r in runs]),
    }
    metrics = {
        "config": cfg.to_dict(),
        "train_images": len(train_set),
        "test_images": len(test_set),
        "runs": [{k: v for k, v in r.items() if k != "step_losses"} for r in runs],
        "summary": summary,
    }
    write_json(metrics, out / "metrics.json")
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
    matplotlib = require("matplotlib", extra="train", purpose="the learning-curve plot")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", extra="train")

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
    MaxNLocator = require("matplotlib.ticker", extra="train").MaxNLocator  # noqa: N806

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
    buf = io.BytesIO()  # written whole or not at all, like metrics.json
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    write_bytes(buf.getvalue(), path)
    return path
