"""The switch of the core's optional Triton kernels on CUDA, and their one fallback.

:mod:`visualmixer.core.triton_kernels` fuses work that the eager path runs as many small
kernels (generator 2's row keys and permutations; the planner's pixel-pair sums), with the
same integers.
They are **off by default** (``VISUALMIXER_TRITON=1`` or :func:`set_enabled` switches them on)
until they are measured on a GPU. The kernels' module imports Triton, so it is imported only
here, on the first call that applies; if Triton is missing or a kernel fails to build, a
``RuntimeWarning`` says so once and the eager path runs from then on.
"""

from __future__ import annotations

import importlib
import warnings

import torch

from visualmixer.core.switches import Switch

__all__ = ["set_enabled", "enabled", "applies", "call"]

_switch = Switch("VISUALMIXER_TRITON", default=False)
_failed: list[str] = []  # why a kernel could not run (then: eager from now on)
_DEVICES = ("cuda",)  # tests add "cpu" to run the kernels in Triton's interpreter


def set_enabled(enabled: bool) -> bool:
    """Run the core's Triton kernels on CUDA tensors (default: no, unless
    ``VISUALMIXER_TRITON=1``); returns the previous setting."""
    return _switch.set(enabled)


def enabled() -> bool:
    """Whether the Triton kernels are used (switched on, and none has failed)."""
    return _switch.on and not _failed


def applies(t: torch.Tensor) -> bool:
    """Whether work on ``t`` goes to a Triton kernel."""
    return _switch.on and not _failed and t.device.type in _DEVICES


def call(name: str, *args):
    """``triton_kernels.<name>(*args)``, or None if the kernels cannot run (said once)."""
    try:
        kernels = importlib.import_module("visualmixer.core.triton_kernels")
        return getattr(kernels, name)(*args)
    except Exception as exc:  # noqa: BLE001 - Triton missing, or a kernel that does not build
        _failed.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        warnings.warn(f"visualmixer: the Triton kernels cannot run ({_failed[-1]}); computing eagerly",
                      RuntimeWarning, stacklevel=3)
        return None
