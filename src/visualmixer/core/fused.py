"""Optional ``torch.compile`` of hot element-wise chains, with an eager fallback (opt-in).

Generator 2's slot keys are two murmur finalisers over every tile slot of every row: about
twenty element-wise passes over a large int32 tensor, each reading and writing it whole.
``torch.compile`` fuses them into one loop (measured on one CPU thread: 74 ms -> 15 ms for
37,632 rows x 256 slots), with the same integers (32-bit wrapping arithmetic; tested against the
eager chain). It is **off by default**: the first call of each function compiles for seconds,
needs a C++ compiler on the CPU (Triton on a GPU) and was not measured on a GPU. Switch it on with
``VISUALMIXER_COMPILE=1`` or :func:`set_enabled`. Any failure to compile or run the compiled
function is reported once (``RuntimeWarning``) and the eager function is used from then on.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable

import torch

from visualmixer.core.switches import Switch

__all__ = ["fused", "set_enabled", "enabled"]

_switch = Switch("VISUALMIXER_COMPILE", default=False)
_lock = threading.Lock()


def set_enabled(enabled: bool) -> bool:
    """Use the compiled functions (default: no, unless ``VISUALMIXER_COMPILE=1``); returns the
    previous setting."""
    return _switch.set(enabled)


def enabled() -> bool:
    """Whether the compiled functions are used."""
    return _switch.on


def fused(fn: Callable) -> Callable:
    """``fn`` that runs through ``torch.compile(fn, dynamic=True)`` while compiling is enabled.

    ``fn`` must be a pure function of its arguments (it may run twice: compiled, then eagerly
    after a failure)."""
    state: dict = {"compiled": None, "failed": False}

    def call(*args):
        if not _switch.on or state["failed"]:
            return fn(*args)
        try:
            with _lock:  # one compilation at a time (parts of a batch run on several threads)
                if state["compiled"] is None:
                    state["compiled"] = torch.compile(fn, dynamic=True)
                compiled = state["compiled"]
            return compiled(*args)
        except Exception as exc:  # noqa: BLE001 - any compile/run failure: eager from now on
            state["failed"] = True
            warnings.warn(f"visualmixer: torch.compile of {fn.__name__} failed ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); running it eagerly", RuntimeWarning, stacklevel=2)
            return fn(*args)

    call.__name__ = call.__qualname__ = fn.__name__
    call.__doc__ = fn.__doc__
    call.eager = fn
    return call
