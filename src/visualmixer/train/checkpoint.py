"""Checkpoints and result files of ``visualmixer train``: written atomically, and a checkpoint
resumed only by a run with the same options (:func:`load_checkpoint`)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from visualmixer.core.atomic import replace_atomically
from visualmixer.train.config import TrainConfig
from visualmixer.train.fit import LR_SCHEDULES

__all__ = ["write_bytes", "save_checkpoint", "write_json", "load_checkpoint"]


def write_bytes(data: bytes, path: Path) -> None:
    """``data`` into ``path``, whole or not at all (mode 0644)."""
    replace_atomically(path, data, mode=0o644, suffix=".tmp")


def save_checkpoint(obj: dict, path: Path) -> None:
    """``torch.save`` of ``obj``, written atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(buf.getvalue(), path)


def write_json(obj, path: Path) -> None:
    """``obj`` as indented JSON, written atomically."""
    write_bytes(json.dumps(obj, indent=2).encode(), path)


_COMPAT = ("data", "model", "target_vfe", "mode", "optimizer", "lr", "batch_size", "train_size",
           "test_size", "channels", "image_size", "weight_decay", "momentum", "region",
           "secret_keys", "mix", "mix_grouping", "mix_share", "mix_balanced", "mix_design", "soft_labels",
           "soft_label_temperature", "lr_schedule", "soft_label_file", "augment", "soft_label_features")  # fmt: skip
# (not compared: device, channels_last, prefetch, loader_workers — where and how fast a step runs,
# the same training up to rounding; a run may resume on another machine or in the other layout)
# options added later: what a checkpoint without them used
_COMPAT_DEFAULTS = {"mix_share": 1.0, "mix_balanced": False, "soft_labels": None, "soft_label_epochs": None,
                    "soft_label_temperature": 4.0, "lr_schedule": "constant", "soft_label_file": None,
                    "augment": [], "soft_label_features": 0.0}


def load_checkpoint(cfg: TrainConfig, ckpt_path: Path) -> dict | None:
    """The checkpoint to resume from (None for a fresh run); refuses a clash or a changed config."""
    if not ckpt_path.exists():
        return None
    if not cfg.resume:
        raise FileExistsError(
            f"{ckpt_path} exists; pass resume=True (--resume) to continue it, or choose another out"
        )
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        old, done, old_epochs = state["config"], int(state["epoch"]) + 1, int(state["config"]["epochs"])
    except Exception as exc:  # truncated, empty or another program's file: torch raises many kinds
        raise ValueError(f"cannot resume {ckpt_path}: not a readable checkpoint of visualmixer train "
                         f"({type(exc).__name__}: {exc}); remove it to train that seed afresh") from None
    # a balanced run from before the design was recorded dealt its groups cyclically
    before = {**_COMPAT_DEFAULTS, "mix_design": "cyclic" if old.get("mix_balanced") else None, **old}
    diff = [k for k in _COMPAT if before.get(k) != cfg.to_dict().get(k)]
    if diff:
        raise ValueError(
            f"cannot resume {ckpt_path}: options differ from the checkpoint's: "
            + ", ".join(f"{k}={before.get(k)!r} (now {cfg.to_dict().get(k)!r})" for k in diff)
        )
    # another length is fine while the epochs done had the learning rates the new length gives them
    # (a constant schedule; a cosine one resumed after its first epoch): else two curves are spliced
    schedule = LR_SCHEDULES[cfg.lr_schedule]
    spliced = any(schedule(e, old_epochs) != schedule(e, cfg.epochs) for e in range(done))
    # the teacher of soft labels trains for soft_label_epochs, else for epochs: its saved weights
    # (teacher.pt) are those of that length, which the resumed run must ask for again
    old_teacher = old.get("soft_label_epochs") or old_epochs
    if cfg.soft_labels is not None and (cfg.soft_label_epochs or cfg.epochs) != old_teacher:
        raise ValueError(f"cannot resume {ckpt_path}: its soft-label teacher trained for {old_teacher} epochs, and "
                         f"soft_label_epochs={cfg.soft_label_epochs}, epochs={cfg.epochs} would train another one "
                         f"for {cfg.soft_label_epochs or cfg.epochs}; give soft_label_epochs={old_teacher} (the same "
                         "teacher), or another out")
    if cfg.epochs < done or spliced:
        why = (f"it has {done} epochs done, more than epochs={cfg.epochs}" if cfg.epochs < done else
               f"its lr_schedule={cfg.lr_schedule!r} ran over epochs={old_epochs}, and over epochs={cfg.epochs} "
               "its epochs done would have had other learning rates")
        raise ValueError(f"cannot resume {ckpt_path}: {why}; give epochs={old_epochs} or another out")
    return state
