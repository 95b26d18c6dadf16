"""The registry of protection methods and the one parser of ``"name:params"`` specs.

In the manner of Opacus' accountant registry: a method family registers its class under a name,
and everything that takes a method spec (``visualmixer audit --methods``, :class:`AuditConfig`,
:func:`visualmixer.eval.baselines.make_method`) builds it here.

>>> from visualmixer.eval.methods import parse_method
>>> m = parse_method("dppix:1")
>>> m.spec, parse_method(m.spec).spec == m.spec
('dppix:1/4', True)

Adding a method::

    @register_method("mine")
    class Mine(ProtectionMethod):
        params = (Param("strength", float, 1.0),)

        def protect(self, images, *, ids=None, key=None):
            return ...  # uint8 (N, C, H, W)
"""

from __future__ import annotations

from types import MappingProxyType

from visualmixer.eval.methods.base import ProtectionMethod

__all__ = ["METHODS", "register_method", "get_method", "parse_method", "method_names", "expand_methods"]

_REGISTRY: dict[str, type[ProtectionMethod]] = {}

#: Read-only view ``name -> class`` of the registered methods (in registration order).
METHODS = MappingProxyType(_REGISTRY)


def register_method(name: str, *, force: bool = False):
    """Class decorator: register a :class:`ProtectionMethod` subclass under ``name``.

    Parameters
    ----------
    name : str
        Lower-case name used in specs (no ``":"`` or ``"/"``).
    force : bool
        Replace an existing registration (otherwise a second one is a ``ValueError``).
    """
    key = name.strip().lower()
    if not key or any(ch in key for ch in ":/, "):
        raise ValueError(f"name must be a non-empty word without ':', '/', ',' or spaces, got {name!r}")

    def decorate(cls: type[ProtectionMethod]) -> type[ProtectionMethod]:
        if not (isinstance(cls, type) and issubclass(cls, ProtectionMethod)):
            raise TypeError(f"register_method({name!r}) needs a ProtectionMethod subclass, got {cls!r}")
        if key in _REGISTRY and _REGISTRY[key] is not cls and not force:
            raise ValueError(f"a protection method named {key!r} is already registered")
        cls.name = key
        _REGISTRY[key] = cls
        return cls

    return decorate


def unregister_method(name: str) -> None:
    """Remove a registration (tests that register toy methods clean up with this)."""
    _REGISTRY.pop(name.strip().lower(), None)


def method_names() -> tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(_REGISTRY)


def get_method(name: str) -> type[ProtectionMethod]:
    """The class registered under ``name``; ``ValueError`` listing the names otherwise."""
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown method {key!r}; choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[key]


def parse_method(spec: str, *, seed: int | None = None, key=None) -> ProtectionMethod:
    """Build the method a spec names, e.g. ``"noise:0.1"`` or ``"visualmixer:0.5/r7/blocks"``.

    Parameters
    ----------
    spec : str
        ``"name"`` or ``"name:params"``; the names are :func:`method_names`.
    seed : int, optional
        Fixed randomness for experiments (not secret); default fresh OS randomness.
    key : optional
        Secret key for keyed methods.

    Raises
    ------
    ValueError
        ``"unknown method ..."`` for an unregistered name, ``"bad method spec ..."`` when the
        parameters do not parse, or the method's own message when they are out of range.
    """
    name, _, params = spec.partition(":")
    try:
        cls = get_method(name)
    except ValueError as exc:
        raise ValueError(f"{exc} (in {spec!r})") from None
    try:
        return cls.from_params(params.strip(), seed=seed, key=key)
    except ValueError as exc:
        msg = str(exc)
        if spec in msg:
            raise
        raise ValueError(f"bad method spec {spec!r}: {msg}") from exc


def expand_methods(specs) -> list[str]:
    """Expand ``"visualmixer:0.3,0.5"`` into ``["visualmixer:0.3", "visualmixer:0.5"]``."""
    out: list[str] = []
    for spec in specs:
        name, sep, params = spec.partition(":")
        if not sep or "," not in params:
            out.append(spec.strip())
            continue
        out.extend(f"{name.strip()}:{p.strip()}" for p in params.split(",") if p.strip())
    return out
