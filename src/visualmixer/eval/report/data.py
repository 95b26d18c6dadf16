"""Built-in data for the audit: victims, the attacker's own images, and face images.

Every set is split three ways, disjointly: the **owner's training images** (protected, used to
measure utility), the **victims** (protected test images that every attack targets) and the
**attacker's own images** (clean images of the same kind that the attacker owns: it protects them
with its own keys to train A3, trains the A4 classifier on them, and builds the prior-only guess
from them).

================  ======================================================================
``fashion-mnist`` Fashion-MNIST (``visualmixer.data.datasets``; Debian ``dataset-fashion-mnist``)
``photos``        the colour set cut from photos shipped in installed packages (32×32)
``tinted-fm``     Fashion-MNIST garments tinted at random over photo crops, 32×32 colour
                  (colour independent of the class; :mod:`visualmixer.data.tinted`)
``faces``         scikit-image's ``lfw_subset()`` (100 faces + 100 non-faces, 25×25 grey;
                  labels face / non-face)
``imagefolder:P`` the user's own images, ``P/<class>/<files>`` (:mod:`visualmixer.eval.userdata`)
``hf:P``          a Hugging Face image data set saved with ``save_to_disk`` at ``P``
================  ======================================================================

The user's sets form one pool, split like ``faces``: victims, attacker and owner's training
images, disjoint and stratified by class (:func:`visualmixer.eval.usersplit.split_user_data`);
sizes must fit (the error says how many images per class the sizes need).

:func:`face_images` returns larger face photos (astronaut, Grace Hopper and upscaled LFW faces)
for attack A6.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["AuditData", "load_audit_data", "data_options", "face_images", "AUDIT_DATASETS"]

AUDIT_DATASETS = ("fashion-mnist", "photos", "tinted-fm", "faces", "imagefolder:PATH", "hf:PATH")


@dataclass
class AuditData:
    """One data set, split for an audit (all images uint8 ``(N, C, H, W)``, labels int64)."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    victim_images: torch.Tensor
    victim_labels: torch.Tensor
    attacker_images: torch.Tensor
    attacker_labels: torch.Tensor
    num_classes: int
    classes: tuple[str, ...]
    notes: list[str] = field(default_factory=list)  # what loading skipped or converted (user data)


def _take(x: torch.Tensor, y: torch.Tensor, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.randperm(x.shape[0], generator=g)[:n].sort().values
    return x[idx], y[idx]


def data_options(cfg) -> dict:
    """The keyword options of :func:`load_audit_data` an :class:`AuditConfig` sets (user data)."""
    opts = {k: getattr(cfg, k, None) for k in ("image_size", "image_column", "label_column")}
    return {**opts, "progress_bar": bool(getattr(cfg, "progress", False))}


def load_audit_data(name: str, *, n_train: int, n_victims: int, n_attacker: int, seed: int = 0,
                    image_size: int | None = None, image_column: str | None = None,
                    label_column: str | None = None, progress_bar: bool = False) -> AuditData:
    """Load and split a data set for the audit.

    Parameters
    ----------
    name : {"fashion-mnist", "photos", "tinted-fm", "faces", "imagefolder:PATH", "hf:PATH"}
        Which set.
    n_train, n_victims, n_attacker : int
        Sizes of the owner's training split, the victims and the attacker's own images (capped by
        what a built-in set holds; "faces" has only 200 images in all; a user's set must hold them).
    seed : int
        Seed of the random subsets.
    image_size, image_column, label_column, progress_bar
        User data only: :func:`visualmixer.eval.userdata.load_user_images` (which decodes only
        the images per class that the split needs).

    Raises
    ------
    FileNotFoundError
        When Fashion-MNIST is not installed (the message says how), or a user's folder is missing.
    ValueError
        For user data that cannot be audited (the message says why and what to pass).
    """
    from visualmixer.eval.userdata import is_user_data

    if is_user_data(name):
        return _user_audit_data(name, n_train=n_train, n_victims=n_victims, n_attacker=n_attacker, seed=seed,
                                image_size=image_size, image_column=image_column, label_column=label_column,
                                progress_bar=progress_bar)
    g = torch.Generator().manual_seed(seed)
    if name == "fashion-mnist":
        from visualmixer.data.datasets import load_fashion_mnist

        tr = load_fashion_mnist("train")
        te = load_fashion_mnist("test")
        perm = torch.randperm(len(tr), generator=g)
        own = perm[:n_train].sort().values
        att = perm[n_train : n_train + n_attacker].sort().values
        vx, vy = _take(te.images, te.labels, n_victims, g)
        return AuditData(
            name, tr.images[own], tr.labels[own], vx, vy, tr.images[att], tr.labels[att], 10, tuple(tr.classes)
        )
    if name == "tinted-fm":  # Fashion-MNIST garments in random colours over photo crops (colour ≠ label)
        from visualmixer.data.tinted import load_tinted_fashion

        tr, te = load_tinted_fashion("train", seed=seed), load_tinted_fashion("test", seed=seed)
        perm = torch.randperm(len(tr.labels), generator=g)
        own = perm[:n_train].sort().values
        att = perm[n_train : n_train + n_attacker].sort().values
        vx, vy = _take(te.images, te.labels, n_victims, g)
        return AuditData(
            name, tr.images[own], tr.labels[own], vx, vy, tr.images[att], tr.labels[att], 10, tuple(tr.classes)
        )
    if name == "photos":
        from visualmixer.data.datasets import load_photos

        per_class_train = max(1, -(-(n_train + n_attacker) // 10))
        tr = load_photos("train", per_class=per_class_train, seed=seed)
        te = load_photos("test", per_class=max(1, -(-n_victims // 10)), seed=seed)
        k = len(tr.classes)
        perm = torch.randperm(len(tr), generator=g)
        own = perm[:n_train].sort().values
        att = perm[n_train : n_train + n_attacker].sort().values
        vx, vy = _take(te.images, te.labels, n_victims, g)
        return AuditData(
            name, tr.images[own], tr.labels[own], vx, vy, tr.images[att], tr.labels[att], k, tuple(tr.classes)
        )
    if name == "faces":
        from skimage.data import lfw_subset

        arr = np.asarray(lfw_subset(), dtype=np.float64)  # (200, 25, 25) in [0, 1]
        x = torch.from_numpy(np.round(arr * 255).astype(np.uint8)).unsqueeze(1)
        y = torch.cat([torch.ones(100, dtype=torch.long), torch.zeros(100, dtype=torch.long)])
        perm = torch.randperm(200, generator=g)
        # 200 images only: victims first, then the attacker, the rest for the owner's training
        nv = min(n_victims, 60)
        na = min(n_attacker, 80)
        vic, att, own = perm[:nv], perm[nv : nv + na], perm[nv + na :]
        return AuditData(name, x[own], y[own], x[vic], y[vic], x[att], y[att], 2, ("non-face", "face"))
    raise ValueError(f"unknown audit data set {name!r}; choose from {', '.join(AUDIT_DATASETS)}")


def _user_audit_data(name: str, *, n_train, n_victims, n_attacker, seed, **options) -> AuditData:
    import math

    from visualmixer.eval.userdata import count_user_images, load_user_images
    from visualmixer.eval.usersplit import split_user_data

    k = len(count_user_images(name, image_column=options["image_column"], label_column=options["label_column"]))
    per_class = sum(math.ceil(n / k) for n in (n_train, n_victims, n_attacker))
    pool = load_user_images(name, per_class=per_class, seed=seed, **options)
    parts = split_user_data(pool, n_train=n_train, n_victims=n_victims, n_attacker=n_attacker, seed=seed)
    (tx, ty), (vx, vy), (ax, ay) = parts["train"], parts["victims"], parts["attacker"]
    return AuditData(name, tx, ty, vx, vy, ax, ay, len(pool.classes), pool.classes, list(pool.notes))


def face_images(size: int = 128, n_lfw: int = 20) -> torch.Tensor:
    """Face photos for attack A6: astronaut and Grace Hopper (face-centred crops), plus LFW faces.

    All are resized to ``size``×``size`` grey-replicated/colour uint8 ``(N, 3, size, size)``.
    """
    from PIL import Image

    out = []
    try:
        from skimage.data import astronaut

        a = astronaut()[0:320, 64:384]  # the face and shoulders
        out.append(np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BOX)))
    except (ImportError, OSError):  # pragma: no cover
        pass
    try:
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            gh = np.asarray(Image.open(f).convert("RGB"))
        gh = gh[40:440, 56:456]
        out.append(np.asarray(Image.fromarray(gh).resize((size, size), Image.Resampling.BOX)))
    except (ImportError, OSError):  # pragma: no cover
        pass
    imgs = [torch.from_numpy(np.array(o, dtype=np.uint8)).permute(2, 0, 1) for o in out]
    if n_lfw:
        from skimage.data import lfw_subset

        lfw = torch.from_numpy(np.asarray(lfw_subset()[:n_lfw], dtype=np.float32)).unsqueeze(1)
        # pad the tight 25-px crops with a margin (detectors need context), then upscale
        lfw = F.pad(lfw, (6, 6, 6, 6), mode="replicate")
        lfw = F.interpolate(lfw, size=(size, size), mode="bilinear", align_corners=False)
        lfw = (lfw.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
        imgs.extend(list(lfw))
    return torch.stack(imgs) if imgs else torch.zeros(0, 3, size, size, dtype=torch.uint8)
