"""The interface of a protection method, as the audit sees it.

A method protects a batch of uint8 ``(N, C, H, W)`` images; it is written as a spec string
``"name"`` or ``"name:p1/p2/..."`` (``"noise:0.1"``, ``"dppix:1/4"``, ``"visualmixer:0.5/r7/blocks"``)
and built from one by :func:`visualmixer.eval.methods.parse_method`. Subclasses register with
:func:`visualmixer.eval.methods.register_method` and declare:

- ``params``: the positional parameters of the spec (:class:`Param`), or their own
  :meth:`ProtectionMethod.from_params` for another grammar (VisualMixer's options);
- :meth:`ProtectionMethod.protect`, or for methods that are an ``nn.Module`` transform,
  :class:`ModuleMethod` with ``make_module``;
- the capabilities below, which the audit reads instead of testing method names.

Capabilities (class or instance attributes)
-------------------------------------------
``changes_pixels``
    False when the release is the originals (``clean``; ``dpsgd`` protects the model): attacks
    that undo a protection skip it, A3 reports the direct view.
``reference``
    The utility reference row (``clean``): accuracy losses are measured against it.
``mixes_batch``
    The method mixes images of one call (InstaHide): the audit protects a whole set in one call.
``utility``
    How the audit measures utility: ``"offline"`` (train on one protection of the training set),
    ``"online"`` (a fresh protection every epoch) or ``"dpsgd"`` (DP-SGD on clean images).
``moves_regions``
    Whole regions change place (VisualMixer ``/blocks``, ``/keyblocks``).
``region``
    The region side the method uses (a public parameter), or None for the library's size rule.
``block``
    The side of the blocks a key-wide layout is made of (block scrambling, pixelation, DP-Pix),
    or None (then the region side is used).
``protects_sets``
    The method protects a labelled training set as a whole (:meth:`ProtectionMethod.protect_set`,
    VisualMixer's ``/mixK``): each released image may hold parts of several originals, listed by
    ``last_sources`` / ``last_main``; single images (test, inference) go through ``protect``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from visualmixer.core.regions import default_region

__all__ = ["Param", "ProtectionMethod", "ModuleMethod", "format_value", "key_seed", "os_seed"]


def format_value(value: Any) -> str:
    """A parameter as it is written in a spec: ``0.1``, ``4``, ``1`` (for 1.0), ``1e-05``."""
    if isinstance(value, float):
        return f"{value:g}" if value == value else "nan"
    return str(value)


@dataclass(frozen=True)
class Param:
    """One positional parameter of a spec: its name, parser (``float``, ``int``) and default."""

    name: str
    parse: Callable[[str], Any]
    default: Any


def os_seed() -> int:
    """A fresh 63-bit seed from the OS (never torch's global generator)."""
    return int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)


def key_seed(key, purpose: str) -> int:
    """A 63-bit generator seed derived from a key (``visualmixer.Key``, bytes, str or int)."""
    if hasattr(key, "subkey"):
        material = key.subkey("baseline", purpose=purpose)
    elif isinstance(key, (bytes, bytearray)):
        material = hashlib.sha256(bytes(key) + purpose.encode()).digest()
    elif isinstance(key, str):
        material = hashlib.sha256(key.encode() + purpose.encode()).digest()
    elif isinstance(key, int):
        material = hashlib.sha256(key.to_bytes(16, "little", signed=True) + purpose.encode()).digest()
    else:
        raise TypeError(f"key must be a visualmixer.Key, bytes, str or int, got {type(key).__name__}")
    return int.from_bytes(material[:8], "little") & ((1 << 63) - 1)


class ProtectionMethod:
    """Base class of the registered protection methods (see the module docstring).

    Parameters
    ----------
    seed : int, optional
        Fixed randomness (experiments only; not secret). Default: fresh OS randomness.
    key : optional
        A secret key for keyed methods (``visualmixer.Key``, bytes, str or int).
    **values
        The method's ``params`` by name (defaults from the declaration).
    """

    #: registry name, set by :func:`~visualmixer.eval.methods.register_method`
    name: ClassVar[str] = ""
    #: positional spec parameters
    params: ClassVar[tuple[Param, ...]] = ()
    changes_pixels: ClassVar[bool] = True
    reference: ClassVar[bool] = False
    mixes_batch: ClassVar[bool] = False
    utility: str = "offline"
    moves_regions: bool = False
    region: int | None = None
    block: int | None = None
    protects_sets: bool = False

    def __init__(self, *, seed: int | None = None, key=None, **values):
        unknown = set(values) - {p.name for p in self.params}
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown parameters {sorted(unknown)}")
        for p in self.params:
            setattr(self, p.name, values.get(p.name, p.default))
        self.seed, self.key = seed, key
        self.validate()

    # -- specs ----------------------------------------------------------------------------------

    @classmethod
    def from_params(cls, text: str, *, seed: int | None = None, key=None) -> ProtectionMethod:
        """Build from the part of a spec after ``"name:"`` (``"0.1"``, ``"1/4"``; may be empty)."""
        parts = [s.strip() for s in text.split("/")] if text.strip() else []
        if len(parts) > len(cls.params):
            raise ValueError(f"{cls.name} takes at most {len(cls.params)} parameter(s), got {len(parts)}")
        values = {p.name: p.parse(s) for p, s in zip(cls.params, parts, strict=False) if s}
        return cls(seed=seed, key=key, **values)

    def param_text(self) -> str:
        """The spec's parameter part (after ``"name:"``)."""
        return "/".join(format_value(getattr(self, p.name)) for p in self.params)

    @property
    def spec(self) -> str:
        """The spec string; ``parse_method(m.spec)`` builds the same method (fresh randomness)."""
        text = self.param_text()
        return f"{self.name}:{text}" if text else self.name

    def validate(self) -> None:
        """Check the parameters (raise ``ValueError`` naming the parameter)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"

    # -- protecting -----------------------------------------------------------------------------

    def protect(self, images: torch.Tensor, *, ids=None, key=None) -> torch.Tensor:
        """Protect uint8 ``(N, C, H, W)`` images; returns a uint8 batch of the same shape.

        ``ids`` (one per image) and ``key`` are used by keyed methods; others ignore them.
        """
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """:meth:`protect` in chunks of ``chunk`` images (one call for ``mixes_batch`` methods)."""
        if self.mixes_batch or images.shape[0] <= chunk:
            return self.protect(images)
        return torch.cat([self.protect(images[s : s + chunk]) for s in range(0, images.shape[0], chunk)])

    def protect_set(self, images: torch.Tensor, labels: torch.Tensor, *, ids=None, key=None) -> torch.Tensor:
        """Protect a labelled set as a whole; the default protects it image by image.

        Methods with ``protects_sets`` override this and set ``last_main`` (``(N,)`` index of
        the original most of each released image comes from) and ``last_sources``.
        """
        return self(images)

    def attacker_copy(self) -> ProtectionMethod:
        """The same method with the attacker's OWN randomness and key (a new instance).

        Keyed methods (block scrambling, ``/keyblocks``) must not hand the owner's key to the
        attacker, who makes training pairs for A3 with this copy.
        A seeded method (an audit with a seed) gives the copy a seed of its own derived from its
        seed, so the audit is repeatable while the attacker still never holds the owner's randomness.
        """
        return type(self).from_params(self.param_text(), seed=self.derived_seed("attacker"))

    def derived_seed(self, purpose: str) -> int | None:
        """A seed for a helper of this method (the attacker's copy, a layout), derived from
        ``seed`` and ``purpose``; None (fresh OS randomness) when the method has no seed."""
        return None if self.seed is None else key_seed(int(self.seed), purpose)

    def region_for(self, height: int, width: int) -> int:
        """The region side the method uses on ``height``×``width`` images."""
        return int(self.region) if self.region else default_region(height, width)

    # -- what the audit records -------------------------------------------------------------------

    def reset_records(self) -> None:
        """Forget what earlier calls recorded (the audit calls this before the victims' release)."""

    def records(self, height: int, width: int) -> dict:
        """Extra JSON fields for the audit's result of this method (since :meth:`reset_records`)."""
        return {}


class ModuleMethod(ProtectionMethod):
    """A method whose protection is an ``nn.Module`` transform, built by :meth:`make_module`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.module = self.make_module()

    def make_module(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def protect(self, images, *, ids=None, key=None):
        return self.module(images)
