"""Training image classifiers on obfuscated data: the one loop (``fit``), models, runs, DP-SGD.

>>> from visualmixer.train import TrainConfig, train            # doctest: +SKIP
>>> train(TrainConfig(data="fashion-mnist", target_vfe=0.5, epochs=3, out="out/t"))  # doctest: +SKIP
"""

from visualmixer.train.compare import quick_compare
from visualmixer.train.dpsgd import dpsgd_train
from visualmixer.train.fit import evaluate_classifier, fit_classifier, init_model
from visualmixer.train.loop import (
    MODES,
    OPTIMIZERS,
    TrainConfig,
    TrainingDiverged,
    load_sets,
    obfuscate_set,
    plot_curves,
    resolve_device,
    train,
    train_seed,
)
from visualmixer.train.models import MODELS, RegionSortedCNN, SmallCNN, build_model

__all__ = [
    "MODELS",
    "MODES",
    "OPTIMIZERS",
    "RegionSortedCNN",
    "SmallCNN",
    "TrainConfig",
    "TrainingDiverged",
    "build_model",
    "dpsgd_train",
    "evaluate_classifier",
    "fit_classifier",
    "init_model",
    "load_sets",
    "obfuscate_set",
    "plot_curves",
    "quick_compare",
    "resolve_device",
    "train",
    "train_seed",
]
