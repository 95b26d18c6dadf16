"""Knowledge distillation on obfuscated data: a teacher trained on obfuscated images teaches a smaller
student, and the student only ever sees obfuscated images.

Loss (Hinton et al. 2015): ``alpha * T² * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE``.
The same run on clean images (``target_vfe=None``) is the comparison. Keys follow ``visualmixer train``:
``Key.from_seed(seed)`` for the training images (ids ``i``), an independent derived key for the test
images (ids ``("test", i)``) — deterministic and NOT secret, for measuring.

>>> from visualmixer.train.distill import DistillConfig, run_distill      # doctest: +SKIP
>>> run_distill(DistillConfig(target_vfe=0.5, out="out/distill"))            # doctest: +SKIP
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from visualmixer.core.atomic import replace_atomically
from visualmixer.train.fit import evaluate_classifier, fit_classifier, init_model

__all__ = ["DistillConfig", "TinyCNN", "distill_loss", "distill_step", "run_distill", "teacher_loss"]


class TinyCNN(nn.Module):
    """The student: 2 × (3×3 conv + ReLU + 2×2 max-pool) with 8/16 channels, a 32-unit hidden layer.

    About 26 k parameters for 10 classes at 28² (the teacher ``SmallCNN`` has 0.42 M).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(inplace=True),
                                        nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None,
                 temperature: float = 4.0, alpha: float = 0.7) -> torch.Tensor:
    """``alpha · T² · KL(p_T^teacher ‖ p_T^student) + (1 − alpha) · CE(student, labels)``.

    ``labels=None`` (or ``alpha=1``) is pure soft-label distillation.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    t = float(temperature)
    kl = nn.functional.kl_div(nn.functional.log_softmax(student_logits / t, dim=1),
                              nn.functional.log_softmax(teacher_logits.detach() / t, dim=1),
                              reduction="batchmean", log_target=True) * (t * t)
    if labels is None or alpha >= 1.0:
        return kl
    return alpha * kl + (1.0 - alpha) * nn.functional.cross_entropy(student_logits, labels)


def teacher_loss(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.7):
    """A ``fit_classifier`` loss ``(logits, labels, inputs) -> loss``: :func:`distill_loss` against
    ``teacher``'s logits on the same inputs (the teacher in eval mode, without gradients)."""
    teacher.eval()

    def loss(logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(inputs)
        return distill_loss(logits, target, labels, temperature, alpha)

    return loss


def distill_step(student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                 optimizer: torch.optim.Optimizer, temperature: float = 4.0, alpha: float = 0.7) -> float:
    """One optimisation step of the student on a (normalised, obfuscated) batch; returns the loss."""
    teacher.eval()
    with torch.no_grad():
        t_logits = teacher(x)
    student.train()
    loss = distill_loss(student(x), t_logits, y, temperature, alpha)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@dataclass
class DistillConfig:
    data: str = "fashion-mnist"
    data_root: str | None = None
    target_vfe: float | None = 0.5
    compare_clean: bool = True
    train_size: int = 6000
    test_size: int = 2000
    teacher_epochs: int = 3
    student_epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    temperature: float = 4.0
    alpha: float = 0.7
    seeds: list[int] = field(default_factory=lambda: [0])
    out: str | None = None


def _norm_stats(x_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xf = x_u8.float().div(255)
    dims = (0, 2, 3)
    return xf.mean(dims, keepdim=True)[0:1], xf.std(dims, keepdim=True)[0:1].clamp_min(1e-6)


def _normaliser(mean: torch.Tensor, std: torch.Tensor):
    return lambda xb: (xb.float().div(255) - mean) / std


def _accuracy(model: nn.Module, x_u8, y, mean, std, bs: int = 1000) -> float:
    return evaluate_classifier(model, x_u8, y, prepare=_normaliser(mean, std), batch_size=bs)[1]


def _fit(model, x_u8, y, mean, std, cfg: DistillConfig, epochs: int, seed: int, teacher=None) -> list[float]:
    """Adam on (x_u8, y) with :func:`fit_classifier`; with ``teacher`` the loss is
    :func:`distill_loss` against its logits. Returns the mean training loss of every epoch."""
    loss_fn = None if teacher is None else teacher_loss(teacher, cfg.temperature, cfg.alpha)
    res = fit_classifier(model, (x_u8, y), epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                         generator=torch.Generator().manual_seed(seed), prepare=_normaliser(mean, std),
                         loss_fn=loss_fn, seed=seed)
    return [e.loss for e in res.epochs]


def _one(cfg: DistillConfig, target, seed: int, train_set, test_set) -> dict:
    from visualmixer.core.keys import Key
    from visualmixer.data.wrapper import obfuscate_set
    from visualmixer.train.models import SmallCNN

    t0 = time.perf_counter()
    x_tr, y_tr = train_set.images, train_set.labels
    x_te, y_te = test_set.images, test_set.labels
    if target is not None:
        k = Key.from_seed(int(seed))
        x_tr = obfuscate_set(x_tr, float(target), key=k, ids=list(range(x_tr.shape[0])))[0]
        test_key = Key(k.subkey("evaluation", purpose="test-key"))
        x_te = obfuscate_set(x_te, float(target), key=test_key,
                             ids=[("test", i) for i in range(x_te.shape[0])])[0]
    obf_s = time.perf_counter() - t0
    mean, std = _norm_stats(x_tr)
    c, k = x_tr.shape[1], int(max(int(y_tr.max()), int(y_te.max())) + 1)
    teacher = init_model(lambda: SmallCNN(c, k), seed=seed)
    teacher_loss = _fit(teacher, x_tr, y_tr, mean, std, cfg, cfg.teacher_epochs, seed)
    student = init_model(lambda: TinyCNN(c, k), seed=seed + 1)
    # the same initial weights trained on labels only: what distillation adds
    scratch = init_model(lambda: TinyCNN(c, k), seed=seed + 1)
    kd_loss = _fit(student, x_tr, y_tr, mean, std, cfg, cfg.student_epochs, seed + 2, teacher=teacher)
    scratch_loss = _fit(scratch, x_tr, y_tr, mean, std, cfg, cfg.student_epochs, seed + 2)
    return {
        "target_vfe": target, "seed": seed,
        "teacher_acc": _accuracy(teacher, x_te, y_te, mean, std),
        "student_kd_acc": _accuracy(student, x_te, y_te, mean, std),
        "student_scratch_acc": _accuracy(scratch, x_te, y_te, mean, std),
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        "student_params": sum(p.numel() for p in student.parameters()),
        "teacher_loss": teacher_loss, "student_kd_loss": kd_loss, "student_scratch_loss": scratch_loss,
        "obfuscation_seconds": obf_s, "seconds": time.perf_counter() - t0,
    }


def _summary(vals: list[float]) -> dict:
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "n": len(vals)}


def run_distill(cfg: DistillConfig, sets=None) -> dict:
    """Teacher → student on obfuscated data (and on clean data when ``compare_clean``), every seed.

    ``sets`` = (train ImageSet, test ImageSet) overrides loading ``cfg.data``. Writes
    ``cfg.out/metrics.json`` when ``cfg.out`` is set and returns the same dict.
    """
    if cfg.out and Path(cfg.out).exists() and not Path(cfg.out).is_dir():  # (before minutes of training)
        raise FileExistsError(f"out={cfg.out!r} is a file: give a folder for the run's outputs")
    if sets is None:
        from visualmixer.data.datasets import load_dataset

        tr = load_dataset(cfg.data, "train", root=cfg.data_root, channels=1)
        te = load_dataset(cfg.data, "test", root=cfg.data_root, channels=1)
        sets = (tr.subset(cfg.train_size, seed=0) if cfg.train_size else tr,
                te.subset(cfg.test_size, seed=1) if cfg.test_size else te)
    targets = [cfg.target_vfe]
    if cfg.compare_clean and cfg.target_vfe is not None:
        targets.append(None)
    runs = [_one(cfg, t, s, *sets) for t in targets for s in cfg.seeds]
    groups = {}
    for t in targets:
        name = "clean" if t is None else f"vfe{t:g}"
        rs = [r for r in runs if r["target_vfe"] == t]
        groups[name] = {m: _summary([r[m] for r in rs])
                        for m in ("teacher_acc", "student_kd_acc", "student_scratch_acc")}
    out = {"config": asdict(cfg), "runs": runs, "summary": groups}
    if cfg.out:
        d = Path(cfg.out)
        d.mkdir(parents=True, exist_ok=True)
        replace_atomically(d / "metrics.json", json.dumps(out, indent=2).encode(), mode=0o644, suffix=".tmp")
    return out
