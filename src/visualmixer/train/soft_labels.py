"""Soft labels from the owner's model of its originals: distillation across the protection.

Keyed region mixing trains a model on collages whose regions come from different images of one
class, so the model learns each region's evidence as if the regions were independent and pays
for it on whole test images (about 10 points at k = 8, docs/privacy.md). The owner can give
back what the collages lose: it trains a *teacher* on its own original images — a model blind to
the in-region shuffle (``region-sorted``), so that it reads a protected image exactly as its
unshuffled version — and releases, beside every protected training image, the teacher's class
probabilities on that image. The trainer fits its model to them (the distillation loss of
:func:`visualmixer.train.distill.distill_loss`, soft labels only) instead of the hard labels.

What the soft labels add to a release: for each released image, a function of that image and of
the teacher's weights — no pixel of any source that the image does not already hold; the
teacher's weights were fit to the owner's originals, so whatever the teacher memorised of them
can show through its outputs (not audited; train the teacher with DP-SGD where that matters).

>>> from visualmixer.train import TrainConfig
>>> cfg = TrainConfig(model="region-sorted", target_vfe=1.0, mix=8, mix_balanced=True,
...                   soft_labels="region-sorted").validate()
>>> cfg.soft_labels
'region-sorted'
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from visualmixer.train.distill import teacher_loss
from visualmixer.train.fit import fit_classifier, init_model
from visualmixer.train.models import build_model

__all__ = ["SHUFFLE_BLIND_MODELS", "soft_label_loss", "teacher_for"]

#: Models whose output does not change under any in-region shuffle (``RegionSortedCNN``): the only
#: ones that read a protected image as its original, hence the only possible teachers.
SHUFFLE_BLIND_MODELS = ("region-sorted",)


def soft_label_loss(teacher: nn.Module, temperature: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor],
                                                                        torch.Tensor]:
    """A ``fit_classifier`` loss: the student's logits against ``teacher``'s on the same inputs.

    ``T² · KL(softmax(teacher / T) ‖ softmax(student / T))``, the labels unused
    (:func:`visualmixer.train.distill.teacher_loss` with ``alpha=1``).
    """
    return teacher_loss(teacher, temperature, alpha=1.0)


def teacher_for(model: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, region: int,
                epochs: int, batch_size: int = 128, seed: int | None = None,
                prepare: Callable[[torch.Tensor], torch.Tensor] | None = None, device: str | torch.device = "cpu",
                state: dict | None = None, progress: bool = False, lr_schedule: str = "constant") -> nn.Module:
    """The owner's teacher: ``model`` (one of :data:`SHUFFLE_BLIND_MODELS`) trained on the *original* images.

    Parameters
    ----------
    model : str
        The teacher's model name (:func:`visualmixer.train.models.build_model`).
    images, labels : torch.Tensor
        The owner's original training images ``(N, C, H, W)`` and their labels ``(N,)``.
    num_classes : int
    region : int
        The protection's region side (the grid the model sorts).
    epochs, batch_size : int
        Adam at 1e-3, initialised and shuffled from ``seed`` (deterministic on the CPU).
    lr_schedule : str
        ``fit_classifier``'s learning-rate schedule (``"constant"`` or ``"cosine"``).
    prepare : callable, optional
        ``fit_classifier``'s batch preparation (normalisation); the student's must be the same.
    state : dict, optional
        A saved ``state_dict``: loaded instead of training (a resumed run keeps its teacher).

    Returns
    -------
    torch.nn.Module
        The teacher, in eval mode.
    """
    if model not in SHUFFLE_BLIND_MODELS:
        raise ValueError(f"model={model!r} cannot be a teacher: it must be blind to the in-region shuffle "
                         f"({', '.join(SHUFFLE_BLIND_MODELS)})")
    teacher = init_model(lambda: build_model(model, images.shape[1], num_classes, region=region), seed=seed,
                         device=device)
    if state is not None:
        teacher.load_state_dict(state)
    else:
        fit_classifier(teacher, (images, labels), epochs=epochs, lr=1e-3, batch_size=batch_size, device=device,
                       prepare=prepare, seed=seed, progress=progress, desc=f"seed {seed} teacher",
                       lr_schedule=lr_schedule)
    return teacher.eval()
