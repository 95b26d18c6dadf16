"""The :class:`ObfuscatedDataset` wrapper (see :mod:`visualmixer.data`)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from multiprocessing import context as _mp_context
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["ObfuscatedDataset"]

_MODES = ("offline", "online")


class ObfuscatedDataset(Dataset):
    """A map-style dataset whose images come out obfuscated.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Map-style; ``dataset[i]`` returns ``(image, label)`` (or a longer tuple whose first item
        is the image). The image may be a tensor ``(C, H, W)`` (uint8 or floating), a numpy array
        ``(H, W[, C])`` or a PIL image; the output is of the same kind, shape and dtype.
    key : visualmixer.Key or None
        Master key. ``None`` uses fresh OS randomness for every sample (not reproducible, cannot
        be restored).
    target_vfe : float
        Requested VFE in [0, 1].
    mode : {"offline", "online"}
        ``"offline"``: one fixed shuffle per sample (id = ``ids(index)``). ``"online"``: a new
        shuffle each epoch (id = ``(ids(index), epoch)``); call :meth:`set_epoch` before each epoch.
    ids : sequence or callable, optional
        Image id of each index (int, str or tuple): ``ids[index]`` or ``ids(index)``.
        Default: the index itself.
    region : int, optional
        Region side (default: by image size).
    channel_order : bool
        Also permute the channel order per region.
    saliency : optional
        Passed to :func:`visualmixer.obfuscate`.
    epoch : int
        Initial epoch (online mode).

    Notes
    -----
    The epoch lives in shared memory, so :meth:`set_epoch` reaches DataLoader workers that are
    already running (``persistent_workers=True``) as long as it is called before ``iter(loader)``.
    A copy of the wrapper pickled outside worker start-up keeps the epoch as a plain value.

    Examples
    --------
    >>> import torch, visualmixer as vm
    >>> from visualmixer.data import ObfuscatedDataset
    >>> base = torch.utils.data.TensorDataset(
    ...     torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8))
    >>> ds = ObfuscatedDataset(base, Key.from_seed(0), target_vfe=0.5, mode="online")
    >>> ds.set_epoch(1)
    >>> image, label = ds[3]
    >>> image.shape, int(label)
    (torch.Size([3, 32, 32]), 3)
    """

    def __init__(
        self,
        dataset: Dataset,
        key: Any,
        target_vfe: float = 0.5,
        mode: str = "offline",
        *,
        ids: Sequence[Any] | Callable[[int], Any] | None = None,
        region: int | None = None,
        channel_order: bool = True,
        saliency: Any = None,
        epoch: int = 0,
    ):
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
        if not 0.0 <= float(target_vfe) <= 1.0:
            raise ValueError(f"target_vfe: expected a number in [0, 1], got {target_vfe}")
        if key is not None and not hasattr(key, "subkey"):
            raise TypeError(f"key: expected a visualmixer.Key or None, got {type(key).__name__}")
        self.dataset = dataset
        self.key = key
        self.target_vfe = float(target_vfe)
        self.mode = mode
        self.ids = ids
        self.region = region
        self.channel_order = bool(channel_order)
        self.saliency = saliency
        self._epoch = multiprocessing.Value("q", int(epoch), lock=False)

    # -- epoch ----------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The current epoch (online mode keys on it)."""
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch for online re-keying; call it before iterating the DataLoader."""
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch: expected a non-negative int, got {epoch!r}")
        self._epoch.value = epoch

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if _mp_context.get_spawning_popen() is None:  # plain pickling/copy: no shared memory
            state["_epoch"] = int(self._epoch.value)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state.get("_epoch"), int):
            state["_epoch"] = multiprocessing.Value("q", state["_epoch"], lock=False)
        self.__dict__.update(state)

    # -- samples --------------------------------------------------------------------------------
    def image_id(self, index: int) -> Any:
        """The id used for ``index`` now: the base id, or ``(base id, epoch)`` online."""
        if self.ids is None:
            base = int(index)
        elif callable(self.ids):
            base = self.ids(index)
        else:
            base = self.ids[index]
        return (base, self.epoch) if self.mode == "online" else base

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def obfuscate_item(self, index: int):
        """``(image, rest, result)``: the obfuscated image, the other fields, the full result
        (:class:`visualmixer.ObfuscationResult` with the plan and achieved VFE)."""
        return self._obfuscate_sample(index, self.dataset[index])

    def _obfuscate_sample(self, index: int, sample):
        from visualmixer.core.mixer import obfuscate

        if not isinstance(sample, (tuple, list)) or len(sample) < 1:
            raise TypeError(
                "ObfuscatedDataset: the wrapped dataset must return a tuple (image, label, ...), "
                f"got {type(sample).__name__}"
            )
        image, rest = sample[0], tuple(sample[1:])
        image_id = self.image_id(index)
        res = obfuscate(
            image,
            key=self.key,
            ids=[image_id] if self.key is not None else None,
            target_vfe=self.target_vfe,
            region=self.region,
            channel_order=self.channel_order,
            saliency=self.saliency,
        )
        return res.images, rest, res

    def __getitem__(self, index: int):
        return self._item(*self.obfuscate_item(index)[:2])

    @staticmethod
    def _item(image, rest) -> tuple:
        if isinstance(image, torch.Tensor) and image.requires_grad:
            image = image.detach()
        return (image, *rest)

    def __getitems__(self, indices: Sequence[int]) -> list:
        """A whole batch of samples, obfuscated in ONE :func:`visualmixer.obfuscate` call.

        ``torch.utils.data.DataLoader`` calls this (instead of ``__getitem__`` per index) when a
        dataset defines it. One call per batch is about 17× cheaper than one per image on 28²
        images (``benchmarks/bench_dataset_fetch.py``): the per-call work (saliency, plan
        search, key derivation) is batched. The samples are identical to
        ``[self[i] for i in indices]`` (obfuscation depends only on key, id and image, never on
        the batch). Batches whose images are not tensors of one shape and dtype
        (PIL images, numpy arrays, mixed sizes) or a tensor ``saliency`` map fall back to one call
        per sample.
        """
        samples = [self.dataset[i] for i in indices]

        def one_by_one() -> list:  # per sample, reusing the samples already fetched
            return [self._item(*self._obfuscate_sample(i, s)[:2]) for i, s in zip(indices, samples, strict=True)]

        if not samples or not all(isinstance(s, (tuple, list)) and len(s) >= 1 for s in samples):
            return one_by_one()
        images = [s[0] for s in samples]
        first = images[0]
        same = all(isinstance(im, torch.Tensor) and im.ndim == 3 for im in images) and all(
            im.shape == first.shape and im.dtype == first.dtype and im.device == first.device
            for im in images
        )
        if not same or isinstance(self.saliency, torch.Tensor):  # a map for one image only
            return one_by_one()
        from visualmixer.core.mixer import obfuscate

        res = obfuscate(
            torch.stack(images),
            key=self.key,
            ids=[self.image_id(i) for i in indices] if self.key is not None else None,
            target_vfe=self.target_vfe,
            region=self.region,
            channel_order=self.channel_order,
            saliency=self.saliency,
        )
        out = res.images.detach()
        return [(out[j], *samples[j][1:]) for j in range(len(indices))]

    def __repr__(self) -> str:
        return (f"ObfuscatedDataset(n={len(self)}, mode={self.mode!r}, target_vfe={self.target_vfe}, "
                f"key={self.key!r}, epoch={self.epoch})")
