"""One small interface for the audit's attacks, and their registry.

An :class:`Attack` gets an :class:`AttackContext` — one method's release of the victims' images
and what the attacker may know — and returns its estimates of the originals, keyed by the name
under which they are scored (``"A5"``, ``"A5-colour"``, …). It may also write findings that are
not images into ``ctx.record`` (A4 writes its accuracies there). The audit runner
(:mod:`visualmixer.eval.report.runner`) loops over the registered attacks in registration order,
so an attack may read the estimates of those registered before it (``ctx.estimates``).

Adding an attack::

    @register_attack
    class Mine(Attack):
        name = "A8"
        title = "my attack"
        needs = frozenset({"protected", "attacker_images"})

        def run(self, ctx):
            return {"A8": my_estimate(ctx.protected, ctx.attacker_images)}

The standard attacks A1–A11 are registered by :mod:`visualmixer.eval.attacks.standard`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

__all__ = [
    "Attack",
    "AttackContext",
    "CONTEXT_FIELDS",
    "register_attack",
    "unregister_attack",
    "get_attack",
    "attack_names",
    "registered_attacks",
    "reconstructing_attacks",
    "unscored_methods",
]


@dataclass
class AttackContext:
    """What an attack sees of one method on one data set.

    Attributes
    ----------
    method : ProtectionMethod
        The method (its spec and public parameters are public: Kerckhoffs).
    protected : torch.Tensor
        uint8 ``(N, C, H, W)``: the release the attack works on.
    region : int
        The region side the method uses (public).
    labels : torch.Tensor or None
        ``(N,)`` labels of the released images (they leak by construction); None for face photos.
    attacker_images, attacker_labels : torch.Tensor or None
        The attacker's own clean images ``(M, C, H, W)`` and labels; None for face photos.
    num_classes : int or None
        Number of classes.
    settings : object
        The audit configuration (:class:`~visualmixer.eval.report.presets.AuditConfig`): epochs,
        widths, device, seed, face detectors.
    selected : frozenset of str
        Names of the attacks chosen for this audit.
    estimates : dict
        Estimates of the attacks that ran before, ``name -> float (N, C, H, W)``.
    record : dict
        The method's JSON result; attacks may add findings here.
    state : Any
        What this attack's :meth:`Attack.prepare` returned for the data set.
    held_originals : torch.Tensor or None
        The victims' originals, for attacks whose attacker ALREADY HOLDS the files and asks
        whether and where they were released (A8 linkage / membership). Reconstruction attacks
        must not read it.
    sources : torch.Tensor or None
        For mixed releases, ``(N, R)`` the original each region of each released image came from
        (the ground truth A8 scores region linkage against).
    releases : tuple of torch.Tensor or None
        For online mixing, the later releases of the same victims (epochs 1, 2, …; ``protected``
        is epoch 0): what an attacker who sees several epochs' batches holds (A10).
    targets : dict
        ``name -> (N,)`` index of the victim that estimate ``i`` of attack ``name`` reconstructs,
        where that is not collage ``i``'s main source (scoring only; A10 follows one region of
        each collage, A11 threads from its centre region).
    cache : dict
        Work attacks share for this method (e.g. one inversion network for A9, A10 and A11).
    """

    method: Any
    protected: torch.Tensor
    region: int
    labels: torch.Tensor | None = None
    attacker_images: torch.Tensor | None = None
    attacker_labels: torch.Tensor | None = None
    num_classes: int | None = None
    settings: Any = None
    selected: frozenset = frozenset()
    estimates: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    state: Any = None
    held_originals: torch.Tensor | None = None
    sources: torch.Tensor | None = None
    releases: tuple | None = None
    targets: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)


#: Context fields an attack may name in ``needs``.
CONTEXT_FIELDS = frozenset({"protected", "region", "labels", "attacker_images", "attacker_labels",
                            "num_classes", "method", "estimates", "held_originals", "releases"})


class Attack:
    """Base class of the registered attacks.

    Class attributes: ``name`` (``"A1"``…, the name users select), ``title`` (for reports),
    ``needs`` (the :data:`CONTEXT_FIELDS` it reads; the runner only gives it contexts that have
    them), ``scope``: ``"victims"`` (each data set's victims; the default) or ``"faces"``
    (the face photos of A6, which have no labels and no attacker images), and ``reconstructs``.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    needs: ClassVar[frozenset] = frozenset({"protected"})
    scope: ClassVar[str] = "victims"
    #: whether :meth:`run` estimates the images (scored by SSIM and re-identification); False for
    #: attacks whose findings go to ``ctx.record`` only (A4, A8)
    reconstructs: ClassVar[bool] = True

    def applies_to(self, method) -> bool:
        """Whether the attack means anything against ``method`` (default: always)."""
        return True

    def prepare(self, settings, data) -> Any:
        """Work done once per data set before any method (e.g. train a classifier); default None."""
        return None

    def run(self, ctx: AttackContext) -> dict[str, torch.Tensor]:
        """The attack's estimates of the originals, ``name -> float (N, C, H, W)`` in [0, 1]."""
        raise NotImplementedError

    def can_run(self, ctx: AttackContext) -> bool:
        """``applies_to(ctx.method)`` and every field in ``needs`` is present in ``ctx``."""
        return self.applies_to(ctx.method) and all(getattr(ctx, f) is not None for f in self.needs)


_REGISTRY: dict[str, Attack] = {}


def register_attack(cls: type[Attack] | None = None, *, force: bool = False):
    """Class decorator: register an :class:`Attack` subclass (one instance) under its ``name``."""

    def decorate(c: type[Attack]) -> type[Attack]:
        if not (isinstance(c, type) and issubclass(c, Attack)) or not c.name:
            raise TypeError(f"register_attack needs an Attack subclass with a name, got {c!r}")
        unknown = set(c.needs) - CONTEXT_FIELDS
        if unknown:
            raise ValueError(f"{c.name}: unknown needs {sorted(unknown)}; choose from {sorted(CONTEXT_FIELDS)}")
        if c.scope not in ("victims", "faces"):
            raise ValueError(f"{c.name}: scope must be 'victims' or 'faces', got {c.scope!r}")
        if c.name in _REGISTRY and type(_REGISTRY[c.name]) is not c and not force:
            raise ValueError(f"an attack named {c.name!r} is already registered")
        _REGISTRY[c.name] = c()
        return c

    return decorate if cls is None else decorate(cls)


def unregister_attack(name: str) -> None:
    """Remove a registration (tests that register toy attacks clean up with this)."""
    _REGISTRY.pop(name, None)


def get_attack(name: str) -> Attack:
    """The registered attack ``name``; ``ValueError`` listing the names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown attack {name!r}; choose from {', '.join(attack_names())}")
    return _REGISTRY[name]


def attack_names() -> tuple[str, ...]:
    """The registered names, sorted by number (``A1`` … ``A11``, then any added)."""
    return tuple(sorted(_REGISTRY, key=lambda n: (len(n), n)))


def registered_attacks(names=None, *, scope: str | None = None) -> list[Attack]:
    """The registered attacks in registration (= run) order, optionally only ``names`` / ``scope``."""
    chosen = None if names is None else set(names)
    return [a for n, a in _REGISTRY.items()
            if (chosen is None or n in chosen) and (scope is None or a.scope == scope)]


def reconstructing_attacks(names, method) -> list[str]:
    """The attacks among ``names`` that estimate the victims' images of ``method`` (and so give it
    SSIM and re-identification scores): registered, of scope ``"victims"``, ``reconstructs`` and
    applying to it (A9 and A11 only to mixed releases, A10 only to online mixing)."""
    return [a.name for a in registered_attacks(names, scope="victims") if a.reconstructs and a.applies_to(method)]


def unscored_methods(names, methods: dict) -> str | None:
    """Why some of ``methods`` (``{spec: method}``) would get no SSIM or re-identification score
    from the attacks ``names`` (none of them reconstructs their victims), naming the attacks that
    would; None when every method gets one."""
    lost = [spec for spec, m in methods.items() if not reconstructing_attacks(names, m)]
    if not lost:
        return None
    return (f"none of {', '.join(names) or '(no attack)'} reconstructs the victims' images of {', '.join(lost[:3])}"
            f"{' ...' if len(lost) > 3 else ''}, so they get no SSIM or re-identification score: select at least one "
            "of A1, A2, A3, A5, A7 (A9 and A11 score mixed releases only, A10 online mixing only)")
