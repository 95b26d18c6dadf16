"""The federated task without Flower: data of one client, local obfuscation, local training, evaluation.

Everything here is plain torch so it is testable (and reusable by other FL frameworks). The Flower
apps in :mod:`visualmixer.fl.client_app` / :mod:`visualmixer.fl.server_app` only move model weights.

Privacy protocol (docs/method.md applied to FL):

- client ``k`` holds its own partition and its own key. By default (measurement mode) the key is
  ``Key.from_seed(seed)`` mixed with the partition id — reproducible, **not secret**; a real client
  passes ``key-path`` in its node config (a key file made with ``visualmixer keygen``).
- ``mode="offline"``: the partition is obfuscated once with ids ``index``; ``mode="online"``: every
  round it is re-obfuscated with ids ``(index, round)``.
- only weights and scalar metrics leave the client; raw images and keys never do.
- the server evaluates on test images it obfuscates with its own key (the model never needs a key).
- ``soft_labels="region-sorted"``: each client first trains its own teacher on its own original
  images (:func:`client_teacher`, once per client process) and fits the shared model to the
  teacher's probabilities on its protected images (:mod:`visualmixer.train.soft_labels`); the
  teacher never leaves the client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["FL_MODELS", "FLConfig", "client_data", "client_teacher", "evaluate_model", "local_train", "make_model",
           "server_test_set", "state_to_numpy"]

#: The shared models a federation can train (:func:`visualmixer.train.models.build_model` names).
FL_MODELS = ("cnn", "region-sorted")

# Input normalisation fixed for Fashion-MNIST (obfuscation only permutes values, so the
# statistics are the same for clean and obfuscated images).
_MEAN, _STD = 0.2860, 0.3530


@dataclass
class FLConfig:
    data: str = "fashion-mnist"
    data_root: str | None = None
    num_clients: int = 2
    partition: str = "iid"
    target_vfe: float | None = 0.5  # None: clean FL baseline
    mode: str = "offline"           # offline | online
    mix: int = 0                    # >= 2: each client mixes regions within same-class groups of this size
    mix_share: float = 1.0          # with mix: share of region positions exchanged per group, in (0, 1]
    mix_balanced: bool = False      # with mix: every collage holds each member's regions equally often
    model: str = "cnn"              # the shared model, one of FL_MODELS
    soft_labels: str = ""           # "region-sorted": each client's own teacher labels its protected images
    soft_label_epochs: int = 1      # with soft_labels: the teacher's epochs on the client's originals
    soft_label_temperature: float = 4.0
    soft_label_features: float = 0.0  # with soft_labels: weight of the teacher's region-grid features (0: none)
    augment: str = ""               # comma-separated visualmixer.train.augment names, for the model and its teacher
    train_size: int = 2000          # pooled training images before partitioning (0: all)
    test_size: int = 1000
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    seed: int = 0

    @classmethod
    def from_run_config(cls, rc) -> FLConfig:
        """Build from a Flower run config (keys with dashes, e.g. ``target-vfe``)."""
        d = {k.replace("-", "_"): v for k, v in dict(rc).items()}
        cfg = cls()
        for f in cls.__dataclass_fields__:
            if f in d:
                setattr(cfg, f, d[f])
        tv = cfg.target_vfe
        if isinstance(tv, str):
            cfg.target_vfe = None if tv.lower() in ("none", "") else float(tv)
        elif tv is not None and float(tv) < 0:  # run configs have no None: negative means clean
            cfg.target_vfe = None
        if cfg.data_root in ("", None):
            cfg.data_root = None
        for f in ("num_clients", "train_size", "test_size", "local_epochs", "batch_size", "seed", "mix",
                  "soft_label_epochs"):
            setattr(cfg, f, int(getattr(cfg, f)))
        from visualmixer.train.config import check_seeds

        cfg.seed = check_seeds([cfg.seed], "seed")[0]
        cfg.lr, cfg.soft_label_temperature = float(cfg.lr), float(cfg.soft_label_temperature)
        cfg.soft_label_features = float(cfg.soft_label_features)
        cfg.soft_labels = str(cfg.soft_labels or "")
        from visualmixer.train.augment import check_augment

        cfg.augment = ",".join(check_augment([a for a in str(cfg.augment or "").split(",") if a]))
        cfg._check_model()
        if cfg.mode not in ("offline", "online"):
            raise ValueError(f"mode must be 'offline' or 'online', got {cfg.mode!r}")
        if cfg.mix == 1 or cfg.mix < 0:
            raise ValueError(f"mix must be 0 (none) or >= 2, got {cfg.mix}")
        from visualmixer.core.mixing import check_share

        cfg.mix_share = check_share(float(cfg.mix_share), "mix_share")
        cfg._check_sizes()
        cfg.mix_balanced = str(cfg.mix_balanced).lower() in ("true", "1")  # run configs may carry it as text
        if cfg.mix_balanced and not cfg.mix:
            raise ValueError("mix_balanced needs mix >= 2 (images per mixing group)")
        return cfg

    def _check_sizes(self) -> None:
        import math

        for name, low in (("train_size", 0), ("test_size", 0), ("local_epochs", 1), ("batch_size", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name}={getattr(self, name)} is not allowed: give an integer >= {low}"
                                 + (" (0: all)" if low == 0 else ""))
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr} is not allowed: give a finite number > 0")

    def _check_model(self) -> None:
        from visualmixer.train.soft_labels import check_soft_label_features, check_soft_labels

        if self.model not in FL_MODELS:
            raise ValueError(f"model={self.model!r} is not allowed: give one of {', '.join(FL_MODELS)}")
        if self.soft_labels:
            check_soft_labels(self.soft_labels, self.target_vfe)
        self.soft_label_features = check_soft_label_features(self.soft_label_features, model=self.model,
                                                             has_teacher=bool(self.soft_labels),
                                                             teacher_options="soft_labels='region-sorted'")
        if self.soft_label_epochs < 1 or self.soft_label_temperature <= 0:
            raise ValueError(f"soft_label_epochs={self.soft_label_epochs} and soft_label_temperature="
                             f"{self.soft_label_temperature} are not allowed: give an integer >= 1 and a number > 0")


def make_model(in_channels: int = 1, num_classes: int = 10, seed: int = 0, model: str = "cnn",
               size: int = 28) -> nn.Module:
    """The shared model (``model``, one of :data:`FL_MODELS`; default the small CNN) for ``size``² images,
    initialised from ``seed`` (the caller's global RNG is left as it was)."""
    from visualmixer.core.regions import resolve_region
    from visualmixer.train.fit import init_model
    from visualmixer.train.models import build_model

    region = resolve_region(None, size, size)  # the protection's default grid, as obfuscate_local uses
    return init_model(lambda: build_model(model, in_channels, num_classes, region=region), seed=seed)


def _load(cfg: FLConfig, split: str):
    from visualmixer.data.datasets import load_dataset

    ds = load_dataset(cfg.data, split, root=cfg.data_root, channels=1)
    size = cfg.train_size if split == "train" else cfg.test_size
    return ds.subset(size, seed=0 if split == "train" else 1) if size else ds


def client_key(cfg: FLConfig, partition_id: int, key_path: str | None = None):
    """The client's own key: from ``key_path`` if given, else a seeded measurement key."""
    from visualmixer.core.keys import Key

    if key_path:
        return Key.load(key_path)
    return Key(Key.from_seed(int(cfg.seed)).subkey(("fl-client", int(partition_id)), purpose="client-key"))


def client_data(cfg: FLConfig, partition_id: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(uint8 images, labels, global indices) of client ``partition_id``'s partition (not obfuscated)."""
    from visualmixer.fl.partition import partition

    ds = _load(cfg, "train")
    parts = partition(cfg.partition, ds.labels.numpy(), cfg.num_clients, seed=cfg.seed)
    if not 0 <= partition_id < len(parts):
        raise ValueError(f"partition-id {partition_id} out of range for {len(parts)} clients")
    idx = parts[partition_id]
    t = torch.from_numpy(idx)
    return ds.images[t], ds.labels[t], idx


def obfuscate_local(images, indices, cfg: FLConfig, key, server_round: int, labels=None) -> torch.Tensor:
    """Obfuscate a client's images locally: ids ``index`` (offline) or ``(index, round)`` (online).

    The same path as :class:`~visualmixer.data.wrapper.ObfuscatedDataset` (the round is the epoch).
    With ``cfg.mix`` the client protects its partition as a whole
    (:func:`visualmixer.core.mixing.mix`, groups within its own classes; ``labels`` needed).
    """
    from visualmixer.data.wrapper import obfuscate_set

    if cfg.target_vfe is None:
        return images
    epoch = int(server_round) if cfg.mode == "online" else None
    if cfg.mix:
        from visualmixer.core.mixing import mix

        if labels is None:
            raise ValueError("mix needs the client's labels")
        ids = [int(i) if epoch is None else (int(i), epoch) for i in indices]
        return mix(images, labels, key=key, ids=ids, k=int(cfg.mix), target_vfe=float(cfg.target_vfe),
                   share=float(cfg.mix_share), balanced=bool(cfg.mix_balanced)).images
    return obfuscate_set(images, float(cfg.target_vfe), key=key, ids=[int(i) for i in indices], epoch=epoch)[0]


def _norm(x_u8: torch.Tensor) -> torch.Tensor:
    return (x_u8.float().div(255) - _MEAN) / _STD


class _MomentumSGD:
    """``torch.optim.SGD(params, lr, momentum=0.9)`` written out: torch.optim's first construction
    imports torch._dynamo (~5 s per client process on a small CPU), most of a short federated round."""

    def __init__(self, params, lr: float, momentum: float = 0.9):
        self.params = [p for p in params if p.requires_grad]
        self.bufs = [torch.zeros_like(p) for p in self.params]
        self.lr, self.momentum = float(lr), float(momentum)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p, buf in zip(self.params, self.bufs, strict=True):
            buf.mul_(self.momentum).add_(p.grad)
            p.add_(buf, alpha=-self.lr)


def client_augment(cfg: FLConfig, x_u8: torch.Tensor, seed: int):
    """The batch augmentation for ``cfg.augment`` on the protection's default grid of ``x_u8``'s
    size (None without one), keyed by ``seed``."""
    from visualmixer.core.regions import resolve_region
    from visualmixer.train.augment import make_augment

    names = [a for a in cfg.augment.split(",") if a]
    return make_augment(names, region=resolve_region(None, *x_u8.shape[-2:]), seed=seed)


def client_teacher(cfg: FLConfig, x_u8: torch.Tensor, y: torch.Tensor, num_classes: int = 10) -> nn.Module:
    """The client's own teacher for ``cfg.soft_labels``: trained on its *original* images ``(N, 1, H, W)``
    for ``cfg.soft_label_epochs`` (Adam 1e-3, seeded by ``cfg.seed``), inputs normalised as the model's,
    with the model's augmentation (``cfg.augment``)."""
    from visualmixer.core.regions import resolve_region
    from visualmixer.train.soft_labels import teacher_for

    return teacher_for(cfg.soft_labels, x_u8, y, num_classes, region=resolve_region(None, *x_u8.shape[-2:]),
                       epochs=cfg.soft_label_epochs, batch_size=cfg.batch_size, seed=cfg.seed, prepare=_norm,
                       augment=client_augment(cfg, x_u8, cfg.seed))


def local_train(model: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, cfg: FLConfig,
                server_round: int = 1, teacher: nn.Module | None = None) -> dict:
    """SGD (momentum 0.9, as ``torch.optim.SGD``) for ``cfg.local_epochs`` over (x_u8, y); returns loss and time.

    The library's one loop (:func:`visualmixer.train.fit.fit_classifier`); the batch order is
    seeded with ``cfg.seed * 100003 + server_round``. With a ``teacher`` (:func:`client_teacher`)
    the model is fit to its probabilities at ``cfg.soft_label_temperature`` instead of the labels
    (and with ``cfg.soft_label_features`` to its region-grid features too). With ``cfg.augment`` the
    batches are augmented (:mod:`visualmixer.train.augment`), keyed like the batch order.
    """
    from visualmixer.train.fit import TrainingDiverged, fit_classifier
    from visualmixer.train.soft_labels import soft_label_loss

    t0, sums = time.perf_counter(), [0.0, 0]
    round_seed = cfg.seed * 100003 + server_round

    def tally(info) -> None:
        sums[0] += info.loss * info.size
        sums[1] += info.size

    loss_fn = None if teacher is None else soft_label_loss(teacher, cfg.soft_label_temperature, model=model,
                                                           feature_weight=cfg.soft_label_features)
    try:
        fit_classifier(model, (x_u8, y), epochs=cfg.local_epochs, batch_size=cfg.batch_size,
                       optimizer=_MomentumSGD(model.parameters(), cfg.lr), prepare=_norm,
                       generator=torch.Generator().manual_seed(round_seed), on_step=tally, seed=cfg.seed,
                       loss_fn=loss_fn, augment=client_augment(cfg, x_u8, round_seed))
    except TrainingDiverged as exc:  # never send NaN weights into the average; say what to change
        raise TrainingDiverged(f"{exc} (client SGD at lr={cfg.lr}): try a lower lr", epoch=exc.epoch, step=exc.step,
                               loss=exc.loss) from None
    finally:
        if hasattr(loss_fn, "remove"):  # the feature hooks: the model goes back to the server
            loss_fn.remove()
    return {"train_loss": sums[0] / max(1, sums[1]), "train_seconds": time.perf_counter() - t0}


def evaluate_model(model: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, batch: int = 500) -> dict:
    """``{"loss", "accuracy"}`` of ``model`` on (x_u8, y)."""
    from visualmixer.train.fit import evaluate_classifier

    loss, acc = evaluate_classifier(model, x_u8, y, prepare=_norm, batch_size=batch)
    return {"loss": loss, "accuracy": acc}


def server_test_set(cfg: FLConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The server's test images, obfuscated with the server's own key (clean when target is None)."""
    from visualmixer.core.keys import Key
    from visualmixer.data.wrapper import obfuscate_set

    ds = _load(cfg, "test")
    if cfg.target_vfe is None:
        return ds.images, ds.labels
    key = Key(Key.from_seed(int(cfg.seed)).subkey("fl-server", purpose="test-key"))
    ids = [("test", i) for i in range(ds.images.shape[0])]
    return obfuscate_set(ds.images, float(cfg.target_vfe), key=key, ids=ids)[0], ds.labels


def state_to_numpy(model: nn.Module) -> dict:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
