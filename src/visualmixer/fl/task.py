"""The federated task without Flower: data of one client, local obfuscation, local training, evaluation.

Everything here is plain torch so it is testable (and reusable by other FL frameworks). The Flower
apps in :mod:`visualmixer.fl.client_app` / :mod:`visualmixer.fl.server_app` only move model weights.

Privacy protocol (SPEC §7 applied to FL):

- client ``k`` holds its own partition and its own key. By default (measurement mode) the key is
  ``Key.from_seed(seed)`` mixed with the partition id — reproducible, **not secret**; a real client
  passes ``key-path`` in its node config (a key file made with ``visualmixer keygen``).
- ``mode="offline"``: the partition is obfuscated once with ids ``index``; ``mode="online"``: every
  round it is re-obfuscated with ids ``(index, round)``.
- only weights and scalar metrics leave the client; raw images and keys never do.
- the server evaluates on test images it obfuscates with its own key (the model never needs a key).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["FLConfig", "client_data", "evaluate_model", "local_train", "make_model", "server_test_set",
           "state_to_numpy"]

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
        for f in ("num_clients", "train_size", "test_size", "local_epochs", "batch_size", "seed"):
            setattr(cfg, f, int(getattr(cfg, f)))
        cfg.lr = float(cfg.lr)
        if cfg.mode not in ("offline", "online"):
            raise ValueError(f"mode must be 'offline' or 'online', got {cfg.mode!r}")
        return cfg


def make_model(in_channels: int = 1, num_classes: int = 10, seed: int = 0) -> nn.Module:
    from visualmixer.train.models import SmallCNN

    torch.manual_seed(seed)
    return SmallCNN(in_channels, num_classes)


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


def obfuscate_local(images, indices, cfg: FLConfig, key, server_round: int) -> torch.Tensor:
    """Obfuscate a client's images locally: ids ``index`` (offline) or ``(index, round)`` (online)."""
    from visualmixer.train.loop import obfuscate_set

    if cfg.target_vfe is None:
        return images
    if cfg.mode == "online":
        ids = [(int(i), int(server_round)) for i in indices]
    else:
        ids = [int(i) for i in indices]
    return obfuscate_set(images, float(cfg.target_vfe), key=key, ids=ids)[0]


def _norm(x_u8: torch.Tensor) -> torch.Tensor:
    return (x_u8.float().div(255) - _MEAN) / _STD


def local_train(model: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, cfg: FLConfig,
                server_round: int = 1) -> dict:
    """SGD (momentum 0.9, as ``torch.optim.SGD``) for ``cfg.local_epochs`` over (x_u8, y); returns loss and time."""
    g = torch.Generator().manual_seed(cfg.seed * 100003 + server_round)
    # Plain momentum SGD written out: torch.optim's first construction imports torch._dynamo
    # (~5 s per client process on a small CPU), most of a short federated round.
    params = [p for p in model.parameters() if p.requires_grad]
    bufs = [torch.zeros_like(p) for p in params]
    model.train()
    t0, loss_sum, n = time.perf_counter(), 0.0, 0
    for _ in range(cfg.local_epochs):
        perm = torch.randperm(x_u8.shape[0], generator=g)
        for s in range(0, perm.shape[0], cfg.batch_size):
            b = perm[s : s + cfg.batch_size]
            logits = model(_norm(x_u8[b]))
            loss = nn.functional.cross_entropy(logits, y[b])
            for p in params:
                p.grad = None
            loss.backward()
            with torch.no_grad():
                for p, buf in zip(params, bufs, strict=True):
                    buf.mul_(0.9).add_(p.grad)
                    p.add_(buf, alpha=-cfg.lr)
            loss_sum += float(loss.detach()) * b.shape[0]
            n += b.shape[0]
    return {"train_loss": loss_sum / max(1, n), "train_seconds": time.perf_counter() - t0}


@torch.no_grad()
def evaluate_model(model: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, batch: int = 500) -> dict:
    model.eval()
    loss_sum, correct = 0.0, 0
    for s in range(0, x_u8.shape[0], batch):
        logits = model(_norm(x_u8[s : s + batch]))
        loss_sum += float(nn.functional.cross_entropy(logits, y[s : s + batch], reduction="sum"))
        correct += int((logits.argmax(1) == y[s : s + batch]).sum())
    n = max(1, x_u8.shape[0])
    return {"loss": loss_sum / n, "accuracy": correct / n}


def server_test_set(cfg: FLConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The server's test images, obfuscated with the server's own key (clean when target is None)."""
    from visualmixer.core.keys import Key
    from visualmixer.train.loop import obfuscate_set

    ds = _load(cfg, "test")
    if cfg.target_vfe is None:
        return ds.images, ds.labels
    key = Key(Key.from_seed(int(cfg.seed)).subkey("fl-server", purpose="test-key"))
    ids = [("test", i) for i in range(ds.images.shape[0])]
    return obfuscate_set(ds.images, float(cfg.target_vfe), key=key, ids=ids)[0], ds.labels


def state_to_numpy(model: nn.Module) -> dict:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
