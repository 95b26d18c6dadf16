"""The :class:`ObfuscatedDataset` wrapper (see :mod:`visualmixer.data`)."""

from __future__ import annotations

import multiprocessing
import operator
from collections.abc import Callable, Iterable, Sequence
from multiprocessing import context as _mp_context
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from visualmixer.core.keys import check_key
from visualmixer.core.mixer import _check_target
from visualmixer.core.regions import resolve_region
from visualmixer.core.saliency import is_own_saliency
from visualmixer.core.validation import refuse_alpha
from visualmixer.data.weightcache import WeightsCache

__all__ = ["ObfuscatedDataset", "obfuscate_set"]

_MODES = ("offline", "online")


def _check_epoch(epoch) -> int:
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise ValueError(f"epoch: expected a non-negative int, got {epoch!r}")
    return epoch


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
    return_vfe : bool
        Append each sample's achieved VFE (a float) as its last field.
    cache_saliency : bool, optional
        Keep each image's saliency weights (:func:`visualmixer.saliency_weights`) from its first
        obfuscation for the next ones: the same bytes, about a third less work per call on small
        images. Default: on in online mode for a ``TensorDataset`` of ``(N, C, H, W)`` images with
        the library's own saliency (``None`` or ``"uniform"``), the case it applies to; ``True``
        elsewhere is an error. The images at an index must not change meanwhile. Costs about
        half a byte per pixel (float64 per VFE window).

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
    >>> ds = ObfuscatedDataset(base, vm.Key.from_seed(0), target_vfe=0.5, mode="online")
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
        return_vfe: bool = False,
        cache_saliency: bool | None = None,
    ):
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
        if key is not None:
            check_key(key)
        if region is not None:  # here, not at the first sample (maybe in a worker process)
            resolve_region(region, 1, 1)
        for name, value in (("channel_order", channel_order), ("return_vfe", return_vfe)):
            if not isinstance(value, bool):
                raise TypeError(f"{name}: expected a bool, got {value!r}")
        if ids is not None and not callable(ids) and (isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence)):
            raise TypeError(f"ids: expected a sequence with one id per index, a callable index -> id, or None; "
                            f"got {type(ids).__name__}")
        self.dataset = dataset
        self.key = key
        self.target_vfe = _check_target(target_vfe)
        self.mode = mode
        self.ids = ids
        self.region = region
        self.channel_order = channel_order
        self.saliency = saliency
        self.return_vfe = return_vfe
        self._epoch = multiprocessing.Value("q", _check_epoch(epoch), lock=False)
        self._weights = self._weights_cache(cache_saliency)

    def _weights_cache(self, wanted: bool | None) -> WeightsCache | None:
        """The saliency weights cache (``cache_saliency``), made here so that DataLoader workers
        forked later share it."""
        images = self.dataset.tensors[0] if isinstance(self.dataset, TensorDataset) else None
        applies = (images is not None and images.ndim == 4 and min(images.shape) > 0
                   and is_own_saliency(self.saliency))
        if wanted is None:
            wanted = applies and self.mode == "online"
        elif not isinstance(wanted, bool):
            raise TypeError(f"cache_saliency: expected a bool or None, got {type(wanted).__name__}")
        elif wanted and not applies:
            raise ValueError("cache_saliency=True needs a TensorDataset of (N, C, H, W) images and saliency "
                             "None or 'uniform'; leave it None to cache where it applies")
        if not wanted:
            return None
        n, _, h, w = images.shape
        return WeightsCache(n, h, w, resolve_region(self.region, h, w), images.device)

    # -- epoch ----------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The current epoch (online mode keys on it)."""
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch for online re-keying; call it before iterating the DataLoader."""
        self._epoch.value = _check_epoch(epoch)

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
    def _index(self, index) -> int:
        """``index`` as a position in ``0 .. len - 1`` (a negative one counts from the end, as for
        a list: ``ds[-1]`` is ``ds[len(ds) - 1]``, with the same id and shuffle)."""
        n, i = len(self), operator.index(index)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        return i + n if i < 0 else i

    def image_id(self, index: int) -> Any:
        """The id used for ``index`` now: the base id, or ``(base id, epoch)`` online."""
        index = self._index(index)
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
        index = self._index(index)
        return self._obfuscate_sample(index, self.dataset[index])

    def _obfuscate_sample(self, index: int, sample):
        from visualmixer.core.mixer import obfuscate

        if not isinstance(sample, (tuple, list)) or len(sample) < 1:
            raise TypeError(
                "ObfuscatedDataset: the wrapped dataset must return a tuple (image, label, ...), "
                f"got {type(sample).__name__}"
            )
        image, rest = sample[0], tuple(sample[1:])
        refuse_alpha(image, who="ObfuscatedDataset")
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
        image, rest, res = self.obfuscate_item(index)
        return self._with_vfe(self._item(image, rest), res)

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
        the batch). A wrapped ``TensorDataset`` is read with one indexing per tensor. Batches
        whose images are not tensors of one shape and dtype (PIL images, numpy arrays, mixed
        sizes) or a tensor ``saliency`` map fall back to one call per sample.
        """
        indices = [self._index(i) for i in indices]
        images, rest = self._fetch(indices)
        if images is None:  # per sample, reusing the samples already fetched
            return [self._with_vfe(self._item(*r[:2]), r[2]) for r in
                    (self._obfuscate_sample(i, smp) for i, smp in zip(indices, rest, strict=True))]
        res = self._obfuscate_images(images, indices)
        out = res.images.detach()
        vfe = res.vfe.tolist() if self.return_vfe else None
        return [(out[j], *rest[j]) + ((vfe[j],) if vfe is not None else ()) for j in range(len(indices))]

    def batch(self, indices: Sequence[int]) -> tuple:
        """The collated batch of ``indices``: what a ``DataLoader`` with default collation makes
        of :meth:`__getitems__` — ``(images, *fields)``, plus the achieved VFE (float64) with
        ``return_vfe`` — the same tensors.

        For a wrapped ``TensorDataset`` of ``(N, C, H, W)`` images it is one ``obfuscate`` call and
        one indexing per tensor, with no per-sample objects (the training loop's in-process online
        path uses it); other datasets are collated from :meth:`__getitems__`.

        Examples
        --------
        >>> import torch, visualmixer as vm
        >>> from torch.utils.data import TensorDataset
        >>> x = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
        >>> ds = ObfuscatedDataset(TensorDataset(x, torch.arange(6)), vm.Key.from_seed(0), 0.5)
        >>> images, labels = ds.batch([4, 1])
        >>> images.shape, labels.tolist()
        (torch.Size([2, 1, 28, 28]), [4, 1])
        """
        indices = [self._index(i) for i in indices]
        tensors = self._tensor_rows(indices)
        if tensors is None:
            return torch.utils.data.default_collate(self.__getitems__(indices))
        res = self._obfuscate_images(tensors[0], indices)
        vfe = (res.vfe.to(torch.float64),) if self.return_vfe else ()
        return (res.images.detach(), *tensors[1:], *vfe)

    def obfuscate_indices(self, indices: Sequence[int]):
        """The :class:`visualmixer.ObfuscationResult` of the images at ``indices``, in one call.

        Its ``.plans`` (with the key and :meth:`image_id` of each index) restore the originals:
        ``restore(res.images, key=ds.key, ids=[ds.image_id(i) for i in indices], plans=res.plans)``.

        Raises
        ------
        TypeError
            When the images at ``indices`` are not tensors ``(C, H, W)`` of one shape and dtype.
        """
        indices = [self._index(i) for i in indices]
        images, _ = self._fetch(indices)
        if images is None:
            raise TypeError("obfuscate_indices: the images must be tensors (C, H, W) of one shape and dtype")
        return self._obfuscate_images(images, indices)

    def _tensor_rows(self, indices: list[int]) -> list[torch.Tensor] | None:
        """The wrapped ``TensorDataset``'s tensors at ``indices`` (images ``(n, C, H, W)`` first),
        when its images can be obfuscated in one call; else None."""
        if not (isinstance(self.dataset, TensorDataset) and self.dataset.tensors[0].ndim == 4
                and not isinstance(self.saliency, torch.Tensor)):
            return None
        idx = torch.as_tensor(indices, dtype=torch.long)
        return [t[idx.to(t.device)] for t in self.dataset.tensors]

    def _fetch(self, indices: list[int]) -> tuple[torch.Tensor | None, list]:
        """``(stacked images or None, per-sample fields)``: the images stacked when they can be
        obfuscated in one call, else None and the full samples (for the per-sample path)."""
        tensors = self._tensor_rows(indices)
        if tensors is not None:
            return tensors[0], [tuple(o[j] for o in tensors[1:]) for j in range(len(indices))]
        samples = [self.dataset[i] for i in indices]
        if not samples or not all(isinstance(smp, (tuple, list)) and len(smp) >= 1 for smp in samples):
            return None, samples
        images = [smp[0] for smp in samples]
        first = images[0]
        same = all(isinstance(im, torch.Tensor) and im.ndim == 3 for im in images) and all(
            im.shape == first.shape and im.dtype == first.dtype and im.device == first.device
            for im in images
        )
        if not same or isinstance(self.saliency, torch.Tensor):  # a map for one image only
            return None, samples
        return torch.stack(images), [tuple(smp[1:]) for smp in samples]

    def _obfuscate_images(self, images: torch.Tensor, indices: list[int]):
        from visualmixer.core.mixer import obfuscate
        from visualmixer.core.weighting import saliency_weights

        saliency = self.saliency
        if self._weights is not None:
            saliency = self._weights.rows(images, indices, lambda x: saliency_weights(
                x, region=self._weights.region, saliency=self.saliency))
        return obfuscate(
            images,
            key=self.key,
            ids=[self.image_id(i) for i in indices] if self.key is not None else None,
            target_vfe=self.target_vfe,
            region=self.region,
            channel_order=self.channel_order,
            saliency=saliency,
        )

    def _with_vfe(self, sample: tuple, res) -> tuple:
        return (*sample, float(res.vfe[0])) if self.return_vfe else sample

    def __repr__(self) -> str:
        return (f"ObfuscatedDataset(n={len(self)}, mode={self.mode!r}, target_vfe={self.target_vfe}, "
                f"key={self.key!r}, epoch={self.epoch})")


def obfuscate_set(
    images: torch.Tensor,
    target_vfe: float,
    *,
    key: Any = None,
    ids: Sequence[Any] | None = None,
    region: int | None = None,
    batch: int = 1024,
    epoch: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Obfuscate a whole tensor set in chunks of ``batch`` images (on ``images``' device).

    The offline (or one epoch's online) pass of an :class:`ObfuscatedDataset` over
    ``TensorDataset(images)``: image ``i`` gets id ``ids[i]``, or ``(ids[i], epoch)`` when
    ``epoch`` is given.

    Parameters
    ----------
    images : torch.Tensor
        uint8 (N, C, H, W).
    target_vfe : float
    key : visualmixer.Key or None
        None: fresh OS randomness per image.
    ids : sequence, optional
        One id per image (default: the index).
    region : int, optional
    batch : int
        Images per :func:`visualmixer.obfuscate` call.
    epoch : int, optional
        Online re-keying: ids ``(id, epoch)``.

    Returns
    -------
    images : torch.Tensor
        uint8 (N, C, H, W), obfuscated.
    vfe : torch.Tensor
        float64 (N,), achieved VFE per image.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise TypeError(f"images: expected a tensor (N, C, H, W), got {type(images).__name__} "
                        f"{tuple(getattr(images, 'shape', ()))}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: expected an int >= 1 (images per obfuscate call), got {batch!r}")
    if ids is not None and len(ids := list(ids)) != images.shape[0]:
        raise ValueError(f"ids: expected one id per image ({images.shape[0]}), got {len(ids)}")
    ds = ObfuscatedDataset(TensorDataset(images), key, target_vfe, "offline" if epoch is None else "online",
                           ids=ids, region=region, epoch=epoch or 0)
    out = torch.empty_like(images)
    vfes = torch.empty(images.shape[0], dtype=torch.float64)
    for s in range(0, images.shape[0], int(batch)):
        chunk: Iterable[int] = range(s, min(s + int(batch), images.shape[0]))
        res = ds.obfuscate_indices(chunk)
        out[s : s + int(batch)] = res.images
        vfes[s : s + int(batch)] = res.vfe.cpu()
    return out, vfes
