"""torchvision v2 transform over :func:`visualmixer.obfuscate`."""

from __future__ import annotations

from typing import Any

import torch

from visualmixer.core.keys import Key
from visualmixer.core.mixer import _check_target, obfuscate
from visualmixer.core.optional import require
from visualmixer.core.regions import resolve_region
from visualmixer.core.validation import refuse_alpha

v2 = require("torchvision.transforms.v2", extra="data", purpose="the VisualMixer transform")

__all__ = ["VisualMixer"]


class VisualMixer(v2.Transform):
    """Obfuscate images in a ``Compose`` pipeline (and, as an ``nn.Module``, anywhere).

    ``tv_tensors.Image`` and PIL images are obfuscated. A plain tensor ``(C, H, W)``/``(N, C, H, W)``
    is taken as the image as torchvision v2 takes it: only where the input holds no
    ``tv_tensors.Image``, PIL image or video, and then only the first plain tensor; other plain
    tensors (a dense target, say) pass through, as they do through ``v2.RandomHorizontalFlip``.
    Two or more plain tensors shaped like images with nothing marked as an image are refused
    (``TypeError``): which one is the image would be a guess, and a wrong one leaves it unprotected.
    Numpy arrays ``(H, W)``/``(H, W, C)`` are obfuscated where the input holds no other image.
    Each image is handed back as it came, so put ``v2.PILToTensor()`` or ``v2.ToImage()`` first
    when later steps need tensors; labels, boxes and other inputs pass through untouched (the
    positions of regions do not change, but content inside boxes is shuffled). A call in which
    nothing is an image (a 2-D tensor, say, or a label tensor ahead of the image tensor) raises
    ``TypeError`` rather than pass an image through unprotected.

    Images with an alpha channel (PIL modes RGBA, LA, PA, a palette with transparency; numpy
    arrays ``(H, W, 4)``) are refused with a ``ValueError``: dropping alpha silently would change
    the image, and keeping it untouched would show the object's outline. Convert first, e.g.
    ``v2.Lambda(lambda im: im.convert("RGB"))``.

    Without a key every call draws fresh OS randomness (the usual choice for training and
    inference, see docs/method.md), which is safe in DataLoader workers: nothing depends on a
    global seed.
    With a key, pass ``ids`` per call through :meth:`forward_with_ids` to get reproducible,
    restorable output.

    Parameters
    ----------
    target_vfe : float
        Requested VFE in ``[0, 1]``.
    key : Key, optional
    region : int, optional
    channel_order : bool

    Examples
    --------
    >>> import torch
    >>> from torchvision.transforms import v2
    >>> t = v2.Compose([v2.ToImage(), VisualMixer(target_vfe=0.5), v2.ToDtype(torch.float32, scale=True)])
    >>> t(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)).shape
    torch.Size([3, 32, 32])
    """

    def __init__(self, target_vfe: float = 0.5, key: Key | None = None, *, region: int | None = None,
                 channel_order: bool = True):
        super().__init__()
        self.target_vfe = _check_target(target_vfe)
        if key is not None and not isinstance(key, Key):
            raise TypeError(f"key must be a visualmixer.Key or None, got {type(key).__name__}")
        self.key = key
        if region is not None:  # at construction, not at the first image
            resolve_region(region, 1, 1)
        if not isinstance(channel_order, bool):
            raise TypeError(f"channel_order must be a bool, got {type(channel_order).__name__}")
        self.region = region
        self.channel_order = channel_order

    def _needs_transform_list(self, flat_inputs: list[Any]) -> list[bool]:
        # torchvision's rule (v2.Transform._needs_transform_list): a plain tensor is the image only
        # where nothing is explicitly an image (tv_tensors.Image, PIL, video), and then only the
        # first plain tensor; it must be (C, H, W) or (N, C, H, W). Numpy arrays count where
        # nothing else is an image (beside a PIL image, a numpy mask stays a mask). A call with no
        # image at all is refused: passing an image through unprotected would be silent.
        import numpy as np
        from PIL import Image
        from torchvision import tv_tensors

        explicit = (tv_tensors.Image, tv_tensors.Video, Image.Image)
        images = [isinstance(x, (tv_tensors.Image, Image.Image)) for x in flat_inputs]
        plain = [n for n, x in enumerate(flat_inputs) if type(x) is torch.Tensor]
        if plain and not any(isinstance(x, explicit) for x in flat_inputs):
            shaped = [n for n in plain if flat_inputs[n].ndim in (3, 4)]
            if len(shaped) > 1:  # torchvision would take the first; a second image would go unprotected
                raise TypeError(
                    f"VisualMixer got {len(shaped)} plain tensors shaped like images and nothing marked as "
                    "one: wrap the image in tv_tensors.Image (the other tensors then pass through, as in "
                    "torchvision), or obfuscate each image in a call of its own"
                )
            images[plain[0]] = flat_inputs[plain[0]].ndim in (3, 4)
        if not any(images):
            images = [isinstance(x, np.ndarray) and x.ndim in (2, 3) for x in flat_inputs]
        if not any(images):
            seen = ", ".join(f"{type(x).__name__}{tuple(x.shape) if hasattr(x, 'shape') else ''}"
                             for x in flat_inputs[:4])
            raise TypeError(
                f"VisualMixer found no image to obfuscate in its input ({seen}): it takes PIL images, "
                "tv_tensors.Image, tensors (C, H, W) or (N, C, H, W) and numpy arrays (H, W) or (H, W, C); "
                "add a channel axis to a 2-D tensor (x.unsqueeze(0)); as in torchvision, only the first "
                "plain tensor of an input is taken as its image (put it first, or wrap it in tv_tensors.Image)"
            )
        return images

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if self.key is not None:
            raise ValueError(
                "a keyed VisualMixer needs image ids: call forward_with_ids(images, ids) "
                "(or use visualmixer.data.ObfuscatedDataset)"
            )
        return self._obfuscate(inpt, None)

    def forward_with_ids(self, images, ids):
        """Keyed, reproducible obfuscation of ``images`` with one id per image."""
        return self._obfuscate(images, ids)

    def _obfuscate(self, inpt, ids):
        from torchvision import tv_tensors

        refuse_alpha(inpt, who="VisualMixer", hint="in a Compose, v2.Lambda(lambda im: im.convert(...)) before it")
        res = obfuscate(inpt.as_subclass(torch.Tensor) if isinstance(inpt, tv_tensors.Image) else inpt,
                        key=self.key, ids=ids, target_vfe=self.target_vfe, region=self.region,
                        channel_order=self.channel_order)
        out = res.images
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out

    def extra_repr(self) -> str:
        keyed = "keyed" if self.key is not None else "unkeyed"
        return f"target_vfe={self.target_vfe}, region={self.region}, channel_order={self.channel_order}, {keyed}"
