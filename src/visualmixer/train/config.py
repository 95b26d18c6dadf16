"""The configuration of a ``visualmixer train`` run and the device check.

:class:`TrainConfig` is what the CLI fills from its flags and what checkpoints and
``metrics.json`` store; :func:`resolve_device` turns a device name into a usable ``torch.device``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from visualmixer.core.mixing import check_balanced, check_design, check_share
from visualmixer.core.regions import resolve_region
from visualmixer.train.fit import check_lr_schedule

__all__ = ["MAX_SEED", "MODES", "OPTIMIZERS", "TrainConfig", "check_real", "check_seeds", "resolve_device"]

OPTIMIZERS = ("st-adam", "adam", "sgd")
#: The largest seed (32 bits): per-epoch and per-round seeds multiply it by about 1e6 in 64 bits.
MAX_SEED = 2**32 - 1
MODES = ("offline", "online")
_DEFAULT_LR = {"st-adam": 1e-3, "adam": 1e-3, "sgd": 0.05}


@dataclass(kw_only=True)
class TrainConfig:
    """Everything that defines a training run (also stored in checkpoints and metrics.json).

    Keyword-only; :meth:`validate` checks every option (a ``ValueError`` or ``TypeError`` naming
    it) and stores numbers as ``int`` / ``float``.

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
    lr_schedule : {"constant", "cosine"}
        The learning rate over the epochs (:data:`visualmixer.train.fit.LR_SCHEDULES`): constant, or
        cosine from ``lr`` down to 0 after the last epoch (set once per epoch). A soft-label teacher
        follows the same schedule over its own epochs.
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
    mix : int, optional
        Keyed region mixing across images (:func:`visualmixer.core.mixing.mix`): the training
        set is protected as a whole, regions exchanged within same-class groups of ``mix``
        images, then shuffled inside to ``target_vfe``; online mode re-mixes every epoch (new
        groups and exchanges). Test images are obfuscated one by one. None: no mixing.
    mix_grouping : {"random", "similar"}
        How ``mix`` groups are chosen within a class (keyed random or look-alike).
    mix_share : float
        With ``mix``: the share of region positions exchanged in each group, in (0, 1] (the
        others keep each image's own region; :func:`visualmixer.core.mixing.mix`'s ``share``).
        Default 1: every position.
    mix_balanced : bool
        With ``mix``: every collage holds each group member's regions at the same number of
        positions (:func:`visualmixer.core.mixing.mix`'s ``balanced``). Default False.
    mix_design : str, optional
        With ``mix_balanced``: how the groups are dealt (:mod:`visualmixer.core.mixdeal`):
        ``"switched"`` (the default) or ``"cyclic"`` (to reproduce runs made before 2026-11-29;
        a checkpoint of such a run records no design and resumes only with ``"cyclic"``).
    soft_labels : str, optional
        Train the student on the owner's soft labels (:mod:`visualmixer.train.soft_labels`): a
        teacher of this model (one blind to the in-region shuffle: ``"region-sorted"``, or
        ``"region-sorted-channels"`` for colour) is first
        trained on the original training images, and the model is fit to its class
        probabilities on each protected training image (distillation loss, no hard labels).
        None (default): hard labels.
    soft_label_epochs : int, optional
        The teacher's epochs (default: ``epochs``).
    soft_label_file : str, optional
        Train on soft labels released with the data (``visualmixer soft-labels``): a CSV of the
        owner's teacher's logits per image file, joined on the training set's file names (so
        ``data`` must be an ``imagefolder:PATH``); the distillation loss as with ``soft_labels``.
    soft_label_temperature : float
        Distillation temperature (default 4).
    soft_label_features : float
        With ``soft_labels`` (or a ``soft_label_file`` written with features): also fit the
        teacher's region-grid features on every training batch, with this weight
        (:class:`visualmixer.train.soft_labels.FeatureMatchingLoss`; the model must be
        ``"region-sorted"`` too). Default 0: the probabilities only.
    region : int, optional
        Region side passed to ``obfuscate`` (default: its size rule).
    augment : sequence of str
        Training-time augmentation (:mod:`visualmixer.train.augment`), applied to the model's
        training batches and to a ``soft_labels`` teacher's: ``("hflip",)`` mirrors each image's
        region grid left-right with probability 0.5, keyed by the seed. With ``soft_label_file``
        the file must hold the mirrored images' logits too (``visualmixer soft-labels --augment
        hflip``). Default ``()``: none.
    secret_keys : bool
        Use an OS-random training key and fresh randomness for the test images (not
        deterministic); see the module docstring.
    obfuscate_batch : int
        Images per ``obfuscate`` call when obfuscating a whole set.
    loader_workers : int
        Online mode only: obfuscate the training batches in this many worker processes (on
        the CPU, beside the training step; kept for the whole run, each batch written into
        shared memory: :class:`~visualmixer.train.workerfeed.WorkerFeed`) instead of in the
        training process. The batches are identical, so results do not change; 0 (default)
        obfuscates in the training process, on the training device.
    prefetch : int, optional
        Online mode in the training process (``loader_workers=0``): obfuscate this many batches
        ahead in a background thread, overlapping the training step (same batches; 0: each
        batch when the loop asks for it). Default (None): 2 where the thread has room — training
        on a GPU, or with one torch thread on the CPU — else 0: with several torch threads both
        calls start thread teams and oversubscribe the cores (measured: 1.46x a clean epoch
        with the thread against 1.26x without, 2 threads on 2 cores).
    channels_last : bool
        Keep the trained model's weights (and so its activations) in the channels-last memory
        format (``torch.channels_last``): on the CPU the small CNN's step is about 1.4x faster and
        ResNet-18's 1.1x, and no slower on obfuscated pixels than on clean ones
        (``docs/performance.md``). Not bit for bit the default layout's run: the convolutions sum
        in another order and max-pooling may pick another of values tied up to rounding, so runs
        part like two seeds; the default (False) keeps the documented numbers reproducible. A
        ``soft_labels`` teacher keeps the default layout.
    target_acc : float, optional
        Test accuracy (in [0, 1]) for the "epochs to target" metric.
    resume : bool
        Continue from ``seed<S>/checkpoint.pt`` where it exists.
    progress : bool
        Show a progress bar per epoch (:func:`visualmixer.tools.progress.progress`).
    """

    data: str = "fashion-mnist"
    model: str = "cnn"
    target_vfe: float | None = 0.5
    mode: str = "offline"
    optimizer: str = "adam"  # ST-Adam did not beat Adam in docs/results.md
    lr: float | None = None
    lr_schedule: str = "constant"
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
    mix: int | None = None
    mix_grouping: str = "random"
    mix_share: float = 1.0
    mix_balanced: bool = False
    mix_design: str | None = None
    soft_labels: str | None = None
    soft_label_epochs: int | None = None
    soft_label_file: str | None = None
    soft_label_temperature: float = 4.0
    soft_label_features: float = 0.0
    augment: Sequence[str] = ()
    secret_keys: bool = False
    obfuscate_batch: int = 1024
    loader_workers: int = 0
    prefetch: int | None = None
    channels_last: bool = False
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
        self._validate_numbers()
        self._validate_feed()
        check_lr_schedule(self.lr_schedule)
        if self.mix is not None:
            _check_count("mix", self.mix, 2, " (images per group)")
            if self.target_vfe is None:
                raise ValueError("mix=K needs target_vfe=T (mixing protects the training set; for clean training leave "
                                 "mix out)")
            if self.mode == "online" and int(self.loader_workers):
                raise ValueError("mix with mode='online' re-mixes the whole set each epoch in the training "
                                 "process: use loader_workers=0")
            if self.mode == "online" and self.mix_grouping == "random":
                warnings.warn("online mixing with random groups makes new groups every epoch: whoever sees the "
                              "batches of several epochs re-assembles the originals by intersecting them (attack "
                              "A10, docs/privacy.md 4c: 92 % of the images after 10 epochs at mix=2); use "
                              "mix_grouping='similar' or mode='offline'", UserWarning, stacklevel=2)
        self.mix_share = check_share(self.mix_share, "mix_share")
        if self.mix is None and self.mix_share != 1.0:
            raise ValueError(f"mix_share={self.mix_share} needs mix=K (images per mixing group)")
        if self.mix_grouping not in ("random", "similar"):
            raise ValueError(f"mix_grouping must be 'random' or 'similar', got {self.mix_grouping!r}")
        self.mix_balanced = check_balanced(self.mix_balanced, "mix_balanced")
        if self.mix is None and self.mix_balanced:
            raise ValueError("mix_balanced=True needs mix=K (images per mixing group)")
        if self.mix_design is not None and not self.mix_balanced:
            raise ValueError(f"mix_design={self.mix_design!r} needs mix_balanced=True (it says how balanced "
                             "groups are dealt)")
        if self.mix_balanced:
            self.mix_design = check_design("switched" if self.mix_design is None else self.mix_design, "mix_design")
        if self.mix is None and self.mix_grouping != "random":
            raise ValueError(f"mix_grouping={self.mix_grouping!r} needs mix=K (images per mixing group)")
        self._validate_soft_labels()
        if self.region is not None:
            try:
                resolve_region(self.region, 1, 1)
            except ValueError:
                raise ValueError(f"region={self.region} is not allowed: give a positive int of at most 256 "
                                 "pixels, or leave it out for the size's default") from None
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        from visualmixer.train.augment import check_augment

        if isinstance(self.augment, (str, bytes)):
            raise TypeError(f"augment must be a list of names, got the string {self.augment!r} "
                            f"(write [{self.augment!r}])")
        self.augment = list(check_augment(self.augment))
        resolve_device(self.device)
        return self

    def _validate_numbers(self) -> None:
        """Counts are ints, rates finite floats in their ranges (stored as such)."""
        for name in ("epochs", "batch_size", "obfuscate_batch"):
            setattr(self, name, _check_count(name, getattr(self, name), 1))
        for name in ("train_size", "test_size", "image_size"):
            if getattr(self, name) is not None:
                setattr(self, name, _check_count(name, getattr(self, name), 1))
        if self.image_size is not None and self.image_size > 4096:  # (decoding alone would fill the memory)
            raise ValueError(f"image_size: must be at most 4096, got {self.image_size}")
        self.seeds = check_seeds(self.seeds)
        if self.target_vfe is not None:
            self.target_vfe = check_real("target_vfe", self.target_vfe, 0.0, 1.0, "or None for clean training")
        if self.lr is None:
            self.lr = _DEFAULT_LR[self.optimizer]
        self.lr = check_real("lr", self.lr, 0.0, math.inf, "", low_open=True)
        self.weight_decay = check_real("weight_decay", self.weight_decay, 0.0, math.inf, "")
        self.momentum = check_real("momentum", self.momentum, 0.0, 1.0, "", high_open=True)
        if self.target_acc is not None:
            self.target_acc = check_real("target_acc", self.target_acc, 0.0, 1.0, "(a test accuracy)")

    def _validate_feed(self) -> None:
        """Where the online batches are made: options that would be silently ignored are refused."""
        self.loader_workers = _check_count("loader_workers", self.loader_workers, 0,
                                           " (worker processes; 0: obfuscate in the training process)")
        if self.prefetch is not None:
            self.prefetch = _check_count("prefetch", self.prefetch, 0, " (batches made ahead; 0: none)")
        if self.mode == "online" and self.target_vfe is None:
            raise ValueError("mode='online' obfuscates the training batches as they are drawn: it needs target_vfe=T "
                             "(for clean training leave mode out)")
        feed = [f"{name}={value}" for name, value in (("loader_workers", self.loader_workers or None),
                                                      ("prefetch", self.prefetch)) if value is not None]
        if feed and self.mode != "online":
            raise ValueError(f"{' and '.join(feed)} {'make' if len(feed) > 1 else 'makes'} online batches: "
                             "it needs mode='online'")
        if self.loader_workers and self.prefetch is not None:
            raise ValueError(f"prefetch={self.prefetch} is for the feed in the training process: with "
                             f"loader_workers={self.loader_workers} the workers make the batches ahead")
        if self.prefetch is not None and self.mix is not None:
            raise ValueError(f"prefetch={self.prefetch} does not apply to mix=K: online mixing mixes the whole "
                             "set at the start of each epoch")

    def _validate_soft_labels(self) -> None:
        from visualmixer.train.soft_labels import check_soft_labels

        if self.soft_labels is None:
            if self.soft_label_epochs is not None:
                raise ValueError(f"soft_label_epochs={self.soft_label_epochs} needs soft_labels='region-sorted' "
                                 "(the teacher's model)")
        else:
            check_soft_labels(self.soft_labels, self.target_vfe)
        if self.soft_label_epochs is not None:
            _check_count("soft_label_epochs", self.soft_label_epochs, 1)
        if self.soft_label_file is not None:
            if self.soft_labels is not None:
                raise ValueError(f"soft_label_file={self.soft_label_file!r} and soft_labels={self.soft_labels!r} "
                                 "are two sources of soft labels: give one")
            if self.mix is not None:
                raise ValueError(f"soft_label_file={self.soft_label_file!r} labels the released images as they are: "
                                 "mixing them again (mix=K) would move regions away from their rows")
        if not 0 < float(self.soft_label_temperature) < math.inf:  # (NaN fails too)
            raise ValueError(f"soft_label_temperature={self.soft_label_temperature} is not allowed: give a "
                             "finite number > 0")
        self._validate_feature_matching()

    def _validate_feature_matching(self) -> None:
        from visualmixer.train.soft_labels import check_soft_label_features

        self.soft_label_features = check_soft_label_features(
            self.soft_label_features, model=self.model,
            has_teacher=self.soft_labels is not None or self.soft_label_file is not None,
            teacher_options="soft_labels='region-sorted', or soft_label_file=FILE written with its features")
        if self.soft_label_features and self.soft_label_file is not None and self.augment:
            raise ValueError(f"soft_label_features={self.soft_label_features} with a soft_label_file: the released "
                             f"features are of the images as they are, so augment={list(self.augment)} cannot be "
                             "used with them")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_count(name: str, value, minimum: int, meaning: str = "") -> int:
    """``value`` as an int; a ValueError naming ``name`` unless it is an integer (not a bool,
    not a string) >= ``minimum``."""
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, numbers.Real) or int(value) != value \
            or int(value) < minimum:
        raise ValueError(f"{name}={value!r} is not allowed: give an integer >= {minimum}{meaning}")
    return int(value)


def check_seeds(seeds, name: str = "seeds") -> list[int]:
    """``seeds`` as a list of ints: at least one, each an integer >= 0, each once; else a
    ``TypeError`` / ``ValueError`` naming ``name`` (``visualmixer distill`` shares it)."""
    if isinstance(seeds, (str, bytes, int)) or not isinstance(seeds, Sequence):
        raise TypeError(f"{name} must be a list of ints (one run per seed), got {seeds!r}")
    out = [_check_count(name, s, 0, " (a seed)") for s in seeds]
    if any(s > MAX_SEED for s in out):  # (seeds are multiplied into per-epoch seeds of 64 bits)
        raise ValueError(f"{name}={max(out)} is not allowed: give seeds from 0 to {MAX_SEED}")
    if not out or len(set(out)) != len(out):
        raise ValueError(f"{name}: give at least one seed, each once (got {out})")
    return out


def check_real(name: str, value, low: float, high: float = math.inf, meaning: str = "", *, low_open: bool = False,
               high_open: bool = False) -> float:
    """``value`` as a float; a ValueError naming ``name`` unless it is a finite real number (not a
    bool or a string; not NaN or infinite) in ``[low, high]`` (ends open where asked)."""
    ok = not isinstance(value, (bool, str, bytes)) and isinstance(value, numbers.Real) and math.isfinite(value) \
        and (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not ok:
        allowed = (f"a finite number {'>' if low_open else '>='} {low:g}" if math.isinf(high) else
                   f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")
        raise ValueError(f"{name}={value!r} is not allowed: give {allowed}{' ' + meaning if meaning else ''}")
    return float(value)


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` for ``device``; a clear ValueError when CUDA is asked for but absent."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a device name; use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r} was requested but CUDA is not available here "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False); use device 'cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    elif dev.type not in ("cpu", "mps"):
        raise ValueError(f"unsupported device {device!r}; use cpu or cuda")
    return dev
