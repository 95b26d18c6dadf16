"""Obfuscating a Hugging Face ``datasets.Dataset`` (optional extra ``visualmixer[hf]``).

Two ways, both with :func:`hf_batch_transform` (a plain function of a batch, a dict of lists; it
needs no ``datasets`` at all):

- **offline**, once, stored: ``obfuscate_hf(ds, key)`` runs a batched ``Dataset.map`` with the
  row index as image id; the result is the same for any ``batch_size``/``num_proc`` and, with the
  key and the plans (``plan_column``), restorable;
- **online**, on access: ``ds.with_transform(hf_batch_transform(None))`` (or ``set_transform``)
  obfuscates each batch as it is read, with fresh randomness on every access, so every epoch sees
  new shuffles (augmentation; nothing is stored or restorable). With a key, reads are
  reproducible but need ``id_column``: a transform is not given row indices.

``datasets`` is imported only inside :func:`obfuscate_hf`.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from typing import Any

from visualmixer.core.optional import require
from visualmixer.core.validation import refuse_alpha

__all__ = ["hf_batch_transform", "obfuscate_hf"]



def _to_tensor(value: Any):
    import numpy as np
    import torch
    from PIL import Image

    from visualmixer.tools.imageio import pil_to_tensor

    refuse_alpha(value, who="the image column",
                 hint="e.g. ds.cast_column('image', datasets.Image(mode='RGB'))")
    if isinstance(value, Image.Image):
        return pil_to_tensor(value), "pil"
    # a grey (H, W) image gets a channel axis here and loses it in _from_tensor ("...2d" kinds):
    # the caller gets back the shape it gave (what ds.with_format("numpy") gives for MNIST-like sets)
    if isinstance(value, torch.Tensor):
        if value.ndim == 2:
            return value.unsqueeze(0), "tensor2d"
        return value, "tensor"
    arr = np.asarray(value)
    if arr.ndim == 2:
        return torch.from_numpy(np.ascontiguousarray(arr))[None], "array2d"
    if arr.ndim != 3:
        raise ValueError(f"image column: expected PIL images or (H, W[, C]) arrays, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), "array"


def _from_tensor(t, kind: str):
    from visualmixer.tools.imageio import tensor_to_pil

    if kind == "pil":
        return tensor_to_pil(t)
    if kind == "tensor":
        return t
    if kind == "tensor2d":
        return t[0]
    if kind == "array2d":
        return t[0].numpy()
    return t.numpy().transpose(1, 2, 0)


def hf_batch_transform(
    key: Any,
    *,
    image_column: str = "image",
    id_column: str | None = None,
    target_vfe: float = 0.5,
    region: int | None = None,
    channel_order: bool = True,
    vfe_column: str | None = "vfe",
    plan_column: str | None = None,
) -> Callable[..., dict]:
    """The function ``Dataset.map(fn, batched=True, with_indices=True)`` or ``Dataset.with_transform(fn)``
    / ``set_transform(fn)`` runs.

    Parameters
    ----------
    key : visualmixer.Key or None
        Master key (``None``: fresh randomness on every call, not restorable: the online choice).
    image_column : str
        Column of images (PIL images as ``datasets.Image`` decodes them, or arrays).
    id_column : str, optional
        Column holding each row's image id (int or str); default: the row index, which ``map``
        passes (``with_indices=True``) and a transform does not: with a key and no indices,
        ``id_column`` is required.
    target_vfe, region, channel_order
        As for :func:`visualmixer.obfuscate`.
    vfe_column : str or None
        Column to receive the achieved VFE (None: not added).
    plan_column : str or None
        Column to receive each plan as a JSON string (``Plans.to_dict``). The plans with the key
        restore the originals; keep that column private (default: not added).

    Returns
    -------
    callable
        ``fn(batch, indices=None) -> dict``. With ``indices`` (``map``): the updated columns.
        Without (a transform): the whole batch, images replaced and the new columns added. Same-size
        images of a batch share one :func:`visualmixer.obfuscate` call.

    Examples
    --------
    >>> import numpy as np, visualmixer as vm
    >>> batch = {"image": [np.arange(192, dtype=np.uint8).reshape(8, 8, 3)], "label": [7]}
    >>> online = hf_batch_transform(None, target_vfe=0.5)  # ds.with_transform(online): new shuffles
    >>> out = online(batch)                                 # on every read; the whole batch back
    >>> sorted(out), out["image"][0].shape, out["label"]
    (['image', 'label', 'vfe'], (8, 8, 3), [7])
    >>> stored = hf_batch_transform(vm.Key.from_seed(0), plan_column="plan")  # for Dataset.map
    >>> sorted(stored(batch, indices=[0]))                  # with indices: the updated columns
    ['image', 'plan', 'vfe']
    """

    owner = os.getpid()

    def transform(batch: dict, indices: list[int] | None = None) -> dict:
        import torch

        from visualmixer.core.mixer import obfuscate

        if os.getpid() != owner and torch.get_num_threads() > 1:
            # a worker forked by Dataset.map(num_proc=...): torch's thread pool does not survive a
            # fork (a parallel operator would wait for the parent's threads for ever), so one
            # thread, as DataLoader workers run; the worker's state, not the caller's
            torch.set_num_threads(1)

        if image_column not in batch:
            raise KeyError(f"image_column {image_column!r} is not a column (have {sorted(batch)})")
        images = batch[image_column]
        if id_column is not None:
            ids = list(batch[id_column])
        elif indices is not None:
            ids = list(indices)
        elif key is None:
            ids = None  # fresh randomness: no ids needed
        else:
            raise ValueError(
                "a keyed hf_batch_transform used as a transform (with_transform/set_transform) gets "
                "no row indices: pass id_column= naming a column of image ids, or key=None for "
                "fresh shuffles on every access (online augmentation)"
            )
        converted = [_to_tensor(v) for v in images]
        out_images: list[Any] = [None] * len(images)
        vfes: list[float] = [0.0] * len(images)
        plans: list[str] = [""] * len(images)
        groups: dict[tuple, list[int]] = {}
        for n, (t, _kind) in enumerate(converted):
            groups.setdefault((tuple(t.shape), t.dtype), []).append(n)
        for members in groups.values():
            stack = torch.stack([converted[n][0] for n in members])
            res = obfuscate(
                stack, key=key, ids=[ids[n] for n in members] if key is not None else None,
                target_vfe=target_vfe, region=region, channel_order=channel_order,
            )
            for j, n in enumerate(members):
                out_images[n] = _from_tensor(res.images[j], converted[n][1])
                vfes[n] = float(res.vfe[j])
                if plan_column is not None:
                    plans[n] = json.dumps(res.plans[j].to_dict())
        out = {image_column: out_images}
        if vfe_column is not None:
            out[vfe_column] = vfes
        if plan_column is not None:
            out[plan_column] = plans
        return out if indices is not None else {**batch, **out}

    return transform


def obfuscate_hf(dataset: Any, key: Any, *, batch_size: int = 32, num_proc: int | None = None, **options: Any):
    """Obfuscate the images of a Hugging Face ``datasets.Dataset`` (batched ``map``).

    Parameters
    ----------
    dataset : datasets.Dataset
    key : visualmixer.Key or None
    batch_size, num_proc : int
        Passed to ``Dataset.map``.
    **options
        The keyword options of :func:`hf_batch_transform` (``image_column``, ``id_column``,
        ``target_vfe``, ``region``, ``channel_order``, ``vfe_column``, ``plan_column``); every
        other keyword goes to ``Dataset.map``. Ids default to the row index, so the result does
        not depend on ``batch_size`` or ``num_proc``.

    Returns
    -------
    datasets.Dataset
        The mapped dataset (images obfuscated, plus the ``vfe_column`` / ``plan_column``).

    Examples
    --------
    >>> import datasets, numpy as np, visualmixer as vm
    >>> pixels = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    >>> ds = datasets.Dataset.from_dict({"image": list(pixels)},  # or load_dataset("imagefolder", ...)
    ...                                 features=datasets.Features({"image": datasets.Image()}))
    >>> out = obfuscate_hf(ds, vm.Key.from_seed(0), target_vfe=0.5)
    >>> out.column_names, out.num_rows, out[0]["image"].size
    (['image', 'vfe'], 4, (16, 16))
    """
    require("datasets", extra="hf", purpose="obfuscate_hf")
    if not hasattr(dataset, "map"):
        raise TypeError(f"dataset: expected a datasets.Dataset, got {type(dataset).__name__}")
    mine = [name for name in options if name in _TRANSFORM_OPTIONS]
    fn = hf_batch_transform(key, **{name: options.pop(name) for name in mine})
    return dataset.map(fn, batched=True, with_indices=True, batch_size=batch_size, num_proc=num_proc, **options)


#: The keyword options of :func:`hf_batch_transform` (what :func:`obfuscate_hf` passes on to it).
_TRANSFORM_OPTIONS = frozenset(inspect.signature(hf_batch_transform).parameters) - {"key"}
