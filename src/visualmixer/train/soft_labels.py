"""Soft labels from the owner's model of its originals: distillation across the protection.

Keyed region mixing trains a model on collages whose regions come from different images of one
class, so the model learns each region's evidence as if the regions were independent and pays
for it on whole test images (about 10 points at k = 8, docs/privacy.md). The owner can give
back what the collages lose: it trains a *teacher* on its own original images — a model blind to
the in-region shuffle (``region-sorted``), so that it reads a protected image exactly as its
unshuffled version — and releases, beside every protected training image, the teacher's class
probabilities on that image. The trainer fits its model to them (the distillation loss of
:func:`visualmixer.train.distill.distill_loss`, soft labels only) instead of the hard labels.

The soft labels can also travel as a file of the release (:func:`write_soft_labels`, written by
``visualmixer soft-labels``): one row per released image, its path and the teacher's logits, so a
third party trains on the release alone (:func:`read_soft_labels`, :func:`soft_target_loss`;
``visualmixer train --soft-label-file``).

What the soft labels add to a release: for each released image, a function of that image and of
the teacher's weights — no pixel of any source that the image does not already hold; the
teacher's weights were fit to the owner's originals, so whatever the teacher memorised of them
can show through its outputs (linkage to a source about 1.5× chance, docs/privacy.md; content not
audited; train the teacher with DP-SGD where that matters).

>>> from visualmixer.train import TrainConfig
>>> cfg = TrainConfig(model="region-sorted", target_vfe=1.0, mix=8, mix_balanced=True,
...                   soft_labels="region-sorted").validate()
>>> cfg.soft_labels
'region-sorted'
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from visualmixer.core.atomic import replace_atomically
from visualmixer.core.regions import resolve_region
from visualmixer.data.imageset import ImageSet
from visualmixer.train.augment import AUGMENTATIONS, check_augment, make_augment
from visualmixer.train.distill import distill_loss, teacher_loss
from visualmixer.train.fit import channel_normaliser, fit_classifier, init_model, normalise
from visualmixer.train.models import SHARED_NORMALISATION, build_model

__all__ = ["SHUFFLE_BLIND_MODELS", "FeatureMatchingLoss", "check_soft_label_features", "check_soft_labels",
           "features_path", "owner_soft_labels", "read_soft_labels", "release_features", "release_logits",
           "release_logits_and_features", "soft_label_loss", "soft_target_loss", "teacher_for", "write_soft_labels"]

#: The first column of a soft-label file; the others are the class names.
FILE_COLUMN = "file"

#: Models whose output does not change under any in-region shuffle (``RegionSortedCNN``): the only
#: ones that read a protected image as its original, hence the only possible teachers.
SHUFFLE_BLIND_MODELS = ("region-sorted", "region-sorted-channels")


def check_soft_labels(soft_labels: str, target_vfe: float | None) -> None:
    """Refuse a ``soft_labels`` teacher (a model name) that cannot label protected images: one not in
    :data:`SHUFFLE_BLIND_MODELS`, or any with ``target_vfe=None`` (nothing protected to label)."""
    if soft_labels not in SHUFFLE_BLIND_MODELS:
        raise ValueError(f"soft_labels={soft_labels!r} is not allowed: the teacher must read a protected "
                         f"image as its original, so it must be blind to the in-region shuffle: "
                         f"{', '.join(SHUFFLE_BLIND_MODELS)}")
    if target_vfe is None:
        raise ValueError(f"soft_labels={soft_labels!r} needs a target VFE (the teacher labels the "
                         "protected training images; target_vfe=None trains on the originals)")


def check_soft_label_features(weight, *, model: str, has_teacher: bool, teacher_options: str) -> float:
    """``weight`` as a float, or a ValueError naming ``soft_label_features``: it must be a finite number >= 0,
    and one > 0 needs a teacher (``teacher_options`` says how to give one) and a shuffle-blind ``model``
    (whose region grid has the teacher's shape). Shared by ``visualmixer train`` and ``visualmixer fl``."""
    if isinstance(weight, bool) or not float(weight) >= 0 or float(weight) == float("inf"):
        raise ValueError(f"soft_label_features={weight} is not allowed: give a weight >= 0 (0: match the "
                         "teacher's probabilities only)")
    if float(weight) and not has_teacher:
        raise ValueError(f"soft_label_features={weight} needs a teacher: {teacher_options}")
    if float(weight) and model not in SHUFFLE_BLIND_MODELS:
        raise ValueError(f"soft_label_features={weight} needs a region-sorted model, one of "
                         f"{', '.join(SHUFFLE_BLIND_MODELS)} (got {model!r}): the model's region-grid features "
                         "must have the teacher's shape")
    return float(weight)


def soft_label_loss(teacher: nn.Module, temperature: float, *, model: nn.Module | None = None,
                    feature_weight: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``fit_classifier`` loss: the student's logits against ``teacher``'s on the same inputs.

    ``T² · KL(softmax(teacher / T) ‖ softmax(student / T))``, the labels unused
    (:func:`visualmixer.train.distill.teacher_loss` with ``alpha=1``). With ``feature_weight`` > 0
    also the teacher's region-grid features on ``model``: a :class:`FeatureMatchingLoss` (its
    ``remove()`` takes its hooks off the two models after training).
    """
    if feature_weight:
        return _feature_matching_loss(teacher, model, temperature, feature_weight)
    return teacher_loss(teacher, temperature, alpha=1.0)


def _feature_matching_loss(teacher: nn.Module | None, model: nn.Module | None, temperature: float,
                           feature_weight: float) -> FeatureMatchingLoss:
    """:class:`FeatureMatchingLoss` for :func:`soft_label_loss` (a live teacher) and :func:`soft_target_loss`
    (``teacher=None``: released features), refusing a missing ``model``."""
    if model is None:
        raise ValueError(f"feature_weight={feature_weight} needs the model whose features are matched (model=)")
    return FeatureMatchingLoss(teacher, model, temperature=temperature, weight=feature_weight)


class FeatureMatchingLoss:
    """A ``fit_classifier`` loss: the soft-label loss plus matching the teacher's region-grid features.

    ``T² · KL(softmax(teacher / T) ‖ softmax(model / T)) + weight · ‖g_model − g_teacher‖² / ‖g_teacher‖²``,
    where ``g`` is the output of a model's ``grid`` (for ``region-sorted``: the ``(B, 128, 7, 7)``
    features of the region grid that its classifier reads) on the same batch, and the ratio of
    squared norms is taken over the batch (a hint loss in the manner of FitNets, scale-free).
    Fitting the teacher's probabilities alone leaves the model free to compute them in its own
    way on collages, which need not carry over to whole images; fitting what the teacher computes
    on the way constrains it to the teacher's function (docs/privacy.md, section 4c).

    The model's features are read by a forward hook on its ``grid`` (and the teacher's likewise),
    registered here and removed by :meth:`remove` (or on leaving a ``with`` block).

    Parameters
    ----------
    teacher : torch.nn.Module or None
        The owner's teacher, run on every batch (put in eval mode, not trained). None: the
        batch's targets are the released teacher's outputs, ``(B, K + D)`` — its logits, then its
        features flattened (:func:`read_soft_labels` with ``features=True``).
    model : torch.nn.Module
        The model trained. It and the teacher have a ``grid`` submodule, with outputs of one shape
        (e.g. two ``region-sorted`` models of one region size).
    temperature : float
        The distillation temperature (> 0).
    weight : float
        The feature term's weight (>= 0; 0 is :func:`soft_label_loss`).

    Examples
    --------
    >>> import torch
    >>> from visualmixer.train.models import RegionSortedCNN
    >>> teacher, model = RegionSortedCNN(1, 10), RegionSortedCNN(1, 10)
    >>> x = torch.rand(4, 1, 28, 28)
    >>> with FeatureMatchingLoss(teacher, model, temperature=4.0, weight=1.0) as loss_fn:
    ...     loss = loss_fn(model(x), None, x)
    >>> loss.ndim, bool(loss > 0)
    (0, True)
    """

    def __init__(self, teacher: nn.Module | None, model: nn.Module, *, temperature: float, weight: float) -> None:
        nets = {"model": model} if teacher is None else {"teacher": teacher, "model": model}
        for name, net in nets.items():
            if not isinstance(getattr(net, "grid", None), nn.Module):
                raise ValueError(f"{name} ({type(net).__name__}) has no region grid to match (a 'grid' "
                                 f"submodule, as the {', '.join(SHUFFLE_BLIND_MODELS)} model has)")
        if not float(weight) >= 0:
            raise ValueError(f"weight={weight} is not allowed: give a number >= 0")
        self.teacher = None if teacher is None else teacher.eval()
        self.temperature, self.weight = float(temperature), float(weight)
        self._seen: dict[str, torch.Tensor] = {}
        self._handles = [net.grid.register_forward_hook(self._keeper(name)) for name, net in nets.items()]

    def _keeper(self, name: str):
        def keep(module, args, output):
            self._seen[name] = output

        return keep

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor | None, inputs: torch.Tensor) -> torch.Tensor:
        features = self._seen.pop("model", None)
        if self.teacher is not None:
            with torch.no_grad():
                target_logits = self.teacher(inputs)
            target = self._seen.pop("teacher")
        else:  # released: (B, K + D), the logits then the flattened features
            k = logits.shape[1]
            target_logits, target = targets[:, :k], targets[:, k:]
        if features is None or features[0].numel() != target[0].numel():
            raise RuntimeError("the model's region-grid features of this batch are missing or of another size "
                               f"than the teacher's ({target[0].numel()} values per image): call the loss right "
                               "after the model's forward pass on the same inputs")
        feature_loss = (features.flatten(1) - target.flatten(1)).pow(2).mean() / target.pow(2).mean().clamp_min(1e-12)
        return distill_loss(logits, target_logits, None, self.temperature) + self.weight * feature_loss

    def remove(self) -> None:
        """Remove the forward hooks (the models are as before)."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._seen = [], {}

    def __enter__(self) -> FeatureMatchingLoss:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def teacher_for(model: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, region: int,
                epochs: int, batch_size: int = 128, seed: int | None = None,
                prepare: Callable[[torch.Tensor], torch.Tensor] | None = None, device: str | torch.device = "cpu",
                state: dict | None = None, progress: bool = False, lr_schedule: str = "constant",
                lr: float = 1e-3, augment: Callable | None = None) -> nn.Module:
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
        Adam at ``lr`` (default 1e-3), initialised and shuffled from ``seed`` (deterministic on the CPU).
    lr_schedule : str
        ``fit_classifier``'s learning-rate schedule (``"constant"`` or ``"cosine"``).
    prepare : callable, optional
        ``fit_classifier``'s batch preparation (normalisation); the student's must be the same.
    state : dict, optional
        A saved ``state_dict``: loaded instead of training (a resumed run keeps its teacher).
    augment : callable, optional
        ``fit_classifier``'s training-batch augmentation (:mod:`visualmixer.train.augment`).

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
        fit_classifier(teacher, (images, labels), epochs=epochs, lr=lr, batch_size=batch_size, device=device,
                       prepare=prepare, seed=seed, progress=progress, desc=f"seed {seed} teacher",
                       lr_schedule=lr_schedule, augment=augment)
    return teacher.eval()


def owner_soft_labels(originals: ImageSet, release: ImageSet, *, model: str = "region-sorted",
                      region: int | None = None, epochs: int = 10, lr: float = 1e-3, lr_schedule: str = "constant",
                      batch_size: int = 128, seed: int = 0, device: str | torch.device = "cpu",
                      progress: bool = False, augment: Sequence[str] = (),
                      features: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The owner's soft labels for a release: a teacher trained on ``originals``, its logits on ``release``.

    Parameters
    ----------
    originals : ImageSet
        The owner's original labelled images ``(N, C, H, W)`` (all of them: the teacher's training set).
    release : ImageSet
        The protected images ``(M, C, H, W)`` to label (e.g. ``visualmixer obfuscate --mix K``'s
        output), with the same classes and image size.
    model : str
        The teacher, one of :data:`SHUFFLE_BLIND_MODELS`.
    region : int, optional
        The protection's region side (default: the size's default, as ``obfuscate``'s).
    epochs, lr, lr_schedule, batch_size, seed, device, progress
        The teacher's training (:func:`teacher_for`); inputs normalised with the originals'
        per-channel mean and standard deviation.
    augment : sequence of str
        Train the teacher with these augmentations (:data:`visualmixer.train.augment.AUGMENTATIONS`)
        and label each one's view of every released image too, for a trainer that augments the
        same way (``visualmixer train --augment``).
    features : bool
        Also return the teacher's region-grid features on ``release`` (:func:`release_features`),
        for a trainer that matches them (``visualmixer train --soft-label-features``).

    Returns
    -------
    torch.Tensor or tuple
        float32 logits ``(M, K)``, on the CPU, in ``release``'s order; with ``augment``
        ``(M, 1 + len(augment), K)``: the image's, then each view's. With ``features``
        ``(logits, features)``, the features float16 ``(M, 128, h, w)``.

    Examples
    --------
    >>> import torch
    >>> from visualmixer.data.imageset import ImageSet
    >>> x = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    >>> y = torch.arange(8) % 2
    >>> owner_soft_labels(ImageSet(x, y, ("a", "b")), ImageSet(x, y, ("a", "b")), epochs=1).shape
    torch.Size([8, 2])
    """
    if release.classes != originals.classes:
        raise ValueError(f"release has the classes {list(release.classes)}, originals {list(originals.classes)}: "
                         "the soft labels are the teacher's class probabilities, so they must be the same")
    if release.images.shape[1:] != originals.images.shape[1:]:
        raise ValueError(f"release images are {tuple(release.images.shape[1:])}, originals "
                         f"{tuple(originals.images.shape[1:])} (C, H, W): the teacher reads one size")
    dev = torch.device(device)
    mean, std = channel_normaliser(originals.images.to(dev), shared=model in SHARED_NORMALISATION)
    prepare = functools.partial(normalise, mean=mean, std=std)
    side = resolve_region(region, *originals.images.shape[-2:])
    teacher = teacher_for(model, originals.images, originals.labels, originals.num_classes, region=side,
                          epochs=epochs, batch_size=batch_size, seed=seed, prepare=prepare, device=dev,
                          progress=progress, lr_schedule=lr_schedule, lr=lr,
                          augment=make_augment(augment, region=side, seed=seed))
    if features:  # one pass: the grid the logits are read from is the features
        logits, grid = release_logits_and_features(teacher, release.images, prepare=prepare)
    else:
        logits = release_logits(teacher, release.images, prepare=prepare)
    if augment:
        views = [release_logits(teacher, AUGMENTATIONS[name](release.images, side), prepare=prepare)
                 for name in check_augment(augment)]
        logits = torch.stack([logits, *views], dim=1)
    return (logits, grid) if features else logits


def soft_target_loss(temperature: float, *, model: nn.Module | None = None,
                     feature_weight: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``fit_classifier`` loss for released soft labels: the batch's "labels" are the teacher's
    logits ``(B, K)`` (:func:`read_soft_labels`), fit as :func:`soft_label_loss` fits a live teacher's.
    With ``feature_weight`` > 0 they are ``(B, K + D)``, the released features after the logits,
    matched on ``model``'s region grid (a :class:`FeatureMatchingLoss` without a teacher)."""
    if feature_weight:
        return _feature_matching_loss(None, model, temperature, feature_weight)

    def loss(logits: torch.Tensor, target_logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return distill_loss(logits, target_logits, None, temperature)

    return loss


@torch.no_grad()
def release_logits(teacher: nn.Module, images: torch.Tensor, *, prepare: Callable[[torch.Tensor], torch.Tensor],
                   batch_size: int = 1024) -> torch.Tensor:
    """The teacher's logits ``(N, K)`` (float32, on the CPU) on the released images ``(N, C, H, W)``."""
    teacher.eval()
    return _in_batches(teacher, images, prepare=prepare, batch_size=batch_size, dtype=torch.float32)


@torch.no_grad()
def release_features(teacher: nn.Module, images: torch.Tensor, *, prepare: Callable[[torch.Tensor], torch.Tensor],
                     batch_size: int = 1024) -> torch.Tensor:
    """The teacher's region-grid features (``grid_features``, e.g. ``(N, 128, 7, 7)``) on the released
    images ``(N, C, H, W)``, as float16 on the CPU (what :func:`write_soft_labels` stores)."""
    teacher.eval()
    return _in_batches(teacher.grid_features, images, prepare=prepare, batch_size=batch_size, dtype=torch.float16)


@torch.no_grad()
def release_logits_and_features(teacher: nn.Module, images: torch.Tensor, *,
                                prepare: Callable[[torch.Tensor], torch.Tensor],
                                batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`release_logits` and :func:`release_features` of a region-sorted teacher in one pass:
    each batch's grid is computed once and its classifier reads it (the teacher's own forward)."""
    teacher.eval()
    logits, features = [], []
    for s in range(0, images.shape[0], int(batch_size)):
        grid = teacher.grid_features(prepare(images[s : s + batch_size]))
        logits.append(teacher.classifier(grid).float().cpu())
        features.append(grid.half().cpu())
    return torch.cat(logits), torch.cat(features)


def _in_batches(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *,
                prepare: Callable[[torch.Tensor], torch.Tensor], batch_size: int, dtype: torch.dtype) -> torch.Tensor:
    """``fn(prepare(images))`` computed ``batch_size`` images at a time, as ``dtype`` on the CPU."""
    return torch.cat([fn(prepare(images[s : s + batch_size])).to(dtype).cpu()
                      for s in range(0, images.shape[0], int(batch_size))])


def features_path(path: str | Path) -> Path:
    """Where the features of the soft-label file ``path`` are kept: beside it, ``<stem>.features.npy``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.features.npy")


def write_soft_labels(path: str | Path, files: Sequence[str], classes: Sequence[str], logits: torch.Tensor, *,
                      views: Sequence[str] = (), features: torch.Tensor | None = None) -> Path:
    """Write a soft-label file (CSV, atomically, mode 0644): a header ``file,<class>...`` and one row per
    released image, its path relative to the release and the teacher's logits (``repr`` floats: exact).

    With ``views`` (augmentation names, :data:`visualmixer.train.augment.AUGMENTATIONS`) ``logits`` is
    ``(N, 1 + len(views), K)``: the image's, then each view's (e.g. the mirrored image's), in columns
    ``<view>:<class>`` after the image's own. With ``features`` (``(N, ...)``, :func:`release_features`)
    also :func:`features_path` beside it: a float16 ``.npy`` array, one row per CSV row, in order
    (written first, so a CSV on disk always has its features when they were asked for). Without
    ``features`` a features file left beside ``path`` by an earlier teacher is removed, and a rewrite
    removes the old CSV first: a CSV on disk is never paired with another teacher's features.
    """
    logits = torch.as_tensor(logits, dtype=torch.float32)
    views = tuple(views)
    shape = (len(files), 1 + len(views), len(classes)) if views else (len(files), len(classes))
    if logits.shape != shape:
        raise ValueError(f"logits must be {shape} (files{', 1 + views' if views else ''}, classes), "
                         f"got {tuple(logits.shape)}")
    if features is not None and (features.shape[0] != len(files) or features.ndim < 2):  # (all checked first)
        raise ValueError(f"features must be ({len(files)}, ...) (one row per file), got {tuple(features.shape)}")
    Path(path).unlink(missing_ok=True)  # (an interrupted rewrite leaves no CSV beside other features)
    if features is not None:
        buf = io.BytesIO()
        np.save(buf, features.detach().cpu().half().numpy())
        replace_atomically(features_path(path), buf.getvalue(), mode=0o644, suffix=".tmp")
    else:
        features_path(path).unlink(missing_ok=True)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow([FILE_COLUMN, *classes, *(f"{v}:{c}" for v in views for c in classes)])
    for name, row in zip(files, logits.reshape(len(files), -1).tolist(), strict=True):
        out.writerow([name, *(repr(v) for v in row)])
    return replace_atomically(Path(path), buf.getvalue().encode(), mode=0o644, suffix=".tmp")


def _view_columns(path: Path, header: list[str], classes: Sequence[str], views: Sequence[str]) -> list[int]:
    """The value columns to read, in order: the image's ``k`` classes, then each of ``views``' ``k``
    (header ``<class>...`` then ``<view>:<class>...`` per view in the file)."""
    k = len(classes)
    named = [c.partition(":") for c in header[k:]]
    if tuple(header[:k]) != tuple(classes) or len(header) % k or any(c != classes[i % k]
                                                                      for i, (_, _, c) in enumerate(named)):
        raise ValueError(f"soft-label file {path} is for the classes {header}; the training set has "
                         f"{list(classes)}: was it made for this release?")
    in_file = [view for view, _, _ in named[::k]]
    for v in views:
        if v not in in_file:
            raise ValueError(f"soft-label file {path} has no soft labels of the {v!r} view (columns '{v}:<class>'): "
                             f"write it with `visualmixer soft-labels --augment {v}`, or train without that "
                             "augmentation")
    return list(range(k)) + [k * (1 + in_file.index(v)) + i for v in views for i in range(k)]


def read_soft_labels(path: str | Path, files: Sequence[str], classes: Sequence[str], *,
                     views: Sequence[str] = (), features: bool = False) -> torch.Tensor:
    """The teacher's logits ``(len(files), len(classes))`` for ``files``, in their order, from a soft-label file.

    With ``views`` (e.g. ``("hflip",)``) ``(len(files), 1 + len(views), len(classes))``: the image's
    logits, then each view's (written by :func:`write_soft_labels` with ``views``). With
    ``features`` ``(len(files), len(classes) + D)`` float32: the logits, then the teacher's
    region-grid features from :func:`features_path`, flattened (the targets of
    :func:`soft_target_loss` with ``feature_weight``).

    Raises
    ------
    ValueError
        When the file's classes are not ``classes`` (in order), it has no columns for one of
        ``views``, a value is not a finite number, a file is listed twice, or one of ``files`` has
        no row (the message names it and the count).
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0][:1] != [FILE_COLUMN]:
        raise ValueError(f"soft-label file {path}: the first row must be the header '{FILE_COLUMN},<class>,...'")
    header, k = rows[0][1:], len(classes)
    columns = _view_columns(path, header, classes, views)
    table: dict[str, list[float]] = {}
    for line, row in enumerate(rows[1:], start=2):
        try:
            values = [float(v) for v in row[1:]]
        except ValueError:
            values = [math.nan]
        if len(row) != len(header) + 1 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"soft-label file {path}, line {line}: expected a file name and {len(header)} "
                             "finite numbers")
        if row[0] in table:
            raise ValueError(f"soft-label file {path}, line {line}: {row[0]!r} is listed twice")
        table[row[0]] = [values[i] for i in columns]
    missing = [f for f in files if f not in table]
    if missing:
        raise ValueError(f"soft-label file {path} has no row for {len(missing)} of the {len(files)} training "
                         f"images (e.g. {missing[0]!r}): was it made for this release?")
    shape = (len(files), 1 + len(views), k) if views else (len(files), k)
    logits = torch.tensor([table[f] for f in files], dtype=torch.float32).reshape(shape)
    if not features:
        return logits
    if views:
        raise ValueError("the released features are of the images as they are: read them without views")
    return torch.cat([logits, _read_features(path, list(table), files)], dim=1)


def _read_features(path: Path, rows: list[str], files: Sequence[str]) -> torch.Tensor:
    """The features of ``files`` ``(len(files), D)`` float32, from the array beside ``path`` whose rows
    follow the CSV's ``rows`` (file names in file order)."""
    where = features_path(path)
    if not where.exists():
        raise ValueError(f"soft-label file {path} has no features beside it ({where.name}): write it with "
                         "`visualmixer soft-labels --features`, or train without --soft-label-features")
    array = np.load(where, mmap_mode="r", allow_pickle=False)
    if array.shape[0] != len(rows):
        raise ValueError(f"{where} has {array.shape[0]} rows, {path} {len(rows)}: they were not written together")
    index = {name: i for i, name in enumerate(rows)}
    picked = torch.from_numpy(np.ascontiguousarray(array[[index[f] for f in files]]))
    return picked.reshape(len(files), -1).float()
