"""The audit's utility measurement: a classifier trained on the owner's protected training images
and tested on the protected victims.

A method's ``utility`` capability picks the trainer (:data:`UTILITY`): ``"offline"`` (one
protection of the training set), ``"online"`` (a fresh protection every epoch, :func:`fit_online`)
or ``"dpsgd"`` (DP-SGD on the clean images, :func:`dpsgd_utility`). All use the same model, width,
epochs, seed and device (:class:`~visualmixer.eval.attacks.Recognizer`; the one training loop,
:func:`visualmixer.train.fit.fit_classifier`). The model is the audit's CNN, or with
``cfg.utility_model`` a model of :data:`visualmixer.train.models.MODELS` built on the method's region
grid (e.g. ``"region-sorted"``, blind to the in-region shuffle); DP-SGD keeps the audit's CNN.
"""

from __future__ import annotations

import torch

from visualmixer.core.regions import resolve_region
from visualmixer.eval.attacks import Recognizer
from visualmixer.train.models import build_model

__all__ = ["UTILITY", "ONE_RELEASE", "fit_online", "dpsgd_utility", "measure_utility"]


def _recognizer(cfg, num_classes: int, region: int) -> Recognizer:
    name = getattr(cfg, "utility_model", None)
    model = None if name is None else (lambda c, k: build_model(name, c, k, region=region))
    return Recognizer(num_classes, epochs=cfg.epochs, width=cfg.width, device=cfg.device, seed=cfg.seed, model=model)


def fit_online(cfg, num_classes: int, train_images, train_labels, protect, *, region: int | None = None) -> Recognizer:
    """Utility model with online re-keying: epoch ``e`` trains on ``protect(train_images)`` anew.

    The same :class:`~visualmixer.eval.attacks.Recognizer` schedule as the offline path (model,
    width, Adam, batch size, seed of initialisation and of the minibatch order, device, epochs),
    with one fresh protection of the whole training set per epoch. With ``protect`` the identity
    it trains exactly the model ``Recognizer.fit`` trains. ``region``: the protection's region
    side, for ``cfg.utility_model`` (default: the size's, :func:`~visualmixer.core.regions.default_region`).
    """
    region = resolve_region(region, *train_images.shape[-2:])
    return _recognizer(cfg, num_classes, region).fit(train_images, train_labels, per_epoch=protect)


def dpsgd_utility(cfg, data, noise_multiplier: float) -> tuple[float, float]:
    """Victim accuracy and ε of the audit's CNN trained with DP-SGD on the clean training images."""
    from torch.utils.data import DataLoader, TensorDataset

    from visualmixer.eval.attacks import RecognizerCNN
    from visualmixer.train.dpsgd import dpsgd_train
    from visualmixer.train.fit import init_model

    x = data.train_images.float() / 255
    loader = DataLoader(TensorDataset(x, data.train_labels), batch_size=128, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    model = init_model(lambda: RecognizerCNN(x.shape[1], data.num_classes, cfg.width), seed=cfg.seed)
    model, eps = dpsgd_train(model, loader, epochs=cfg.epochs, noise_multiplier=noise_multiplier,
                             device=cfg.device, seed=cfg.seed)
    model.eval()
    with torch.no_grad():
        pred = model(data.victim_images.float().to(cfg.device) / 255).argmax(1).cpu()
    return float((pred == data.victim_labels).double().mean()), eps


def _region(method, data) -> int:
    return method.region_for(*data.train_images.shape[-2:])


def _offline(cfg, method, data, protected_victims, protected_train) -> dict:
    util = _recognizer(cfg, data.num_classes, _region(method, data)).fit(protected_train, data.train_labels)
    return {"accuracy": util.accuracy(protected_victims, data.victim_labels)["accuracy"]}


def _online(cfg, method, data, protected_victims, protected_train) -> dict:
    # a set-protecting method (mixing) re-protects the whole labelled set every epoch
    protect = (lambda x: method.protect_set(x, data.train_labels)) if method.protects_sets else method
    util = fit_online(cfg, data.num_classes, data.train_images, data.train_labels, protect,
                      region=_region(method, data))
    return {"accuracy": util.accuracy(protected_victims, data.victim_labels)["accuracy"]}


def _dpsgd(cfg, method, data, protected_victims, protected_train) -> dict:
    try:
        acc, eps = dpsgd_utility(cfg, data, method.noise_multiplier)
    except ImportError as exc:
        return {"accuracy": None, "error": str(exc)}
    return {"accuracy": acc, "epsilon": eps}


#: ``method.utility`` -> trainer ``(cfg, method, data, protected_victims, protected_train) -> fields``
UTILITY = {"offline": _offline, "online": _online, "dpsgd": _dpsgd}
#: The trainers that train on ONE protection of the training set (made before the victims' release).
ONE_RELEASE = frozenset({"offline"})


def measure_utility(cfg, method, data, protected_victims, protected_train=None) -> dict:
    """``{"accuracy"[, "epsilon" | "error"]}`` of ``method`` by its ``utility`` trainer.

    ``protected_train`` is the training set's protection for the trainers in :data:`ONE_RELEASE`.
    """
    if method.utility not in UTILITY:
        raise ValueError(f"{method.spec}: utility must be one of {', '.join(UTILITY)}, got {method.utility!r}")
    return UTILITY[method.utility](cfg, method, data, protected_victims, protected_train)
