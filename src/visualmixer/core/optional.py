"""Optional dependencies: import them lazily, or say which extra installs them.

``pip install visualmixer`` brings torch, numpy and Pillow only. Everything else lives in an extra
(``pyproject.toml``), and library code imports it through :func:`require` at the point of use, so
a missing package gives one message naming the extra instead of a bare ``ModuleNotFoundError``.

>>> math = require("math", extra="eval")
>>> math.__name__
'math'
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, *, extra: str, purpose: str | None = None) -> ModuleType:
    """Import and return ``module``, or raise :class:`MissingExtraError` naming ``extra``.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"matplotlib.pyplot"``.
    extra : str
        The ``visualmixer[...]`` extra that installs it, e.g. ``"eval"``.
    purpose : str, optional
        What needs it, for the message (e.g. ``"the privacy-utility plot"``).

    Raises
    ------
    MissingExtraError
        When ``module`` (or a package it needs) cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except MissingExtraError:
        raise  # a module of ours already named the extra it needs
    except ImportError as exc:
        # name the package that is really missing (a visualmixer module may fail on its own import)
        top = (getattr(exc, "name", None) or module).split(".")[0]
        what = f"{purpose} needs {top}" if purpose else f"{top} is needed here"
        raise MissingExtraError(
            f"{what}, which is not installed: pip install 'visualmixer[{extra}]' (or 'visualmixer[all]')"
        ) from exc
