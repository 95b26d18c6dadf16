"""The switch of the core's optional Triton kernels on CUDA, and their one fallback.

:mod:`visualmixer.core.triton_kernels` fuses work that the eager path runs as many small
kernels (generator 2's row keys and permutations; the planner's pixel-pair sums), with the
same integers.
They are **off by default** (``VISUALMIXER_TRITON=1`` or :func:`set_enabled` switches them on)
until they are measured on a GPU. The kernels' module imports Triton, so it is imported only
here, on the first call that applies; if Triton is missing or a kernel fails to build, a
``RuntimeWarning`` says so once and the eager path runs from then on. The first call of each
kernel variant on a device is also checked against the eager path (:func:`call`), so a Triton
release or GPU the kernels were never run on cannot change the output bytes: data obfuscated
with the kernels must restore without them, on any device.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Hashable
from typing import Any

import torch

from visualmixer.core.switches import Switch

__all__ = ["set_enabled", "enabled", "applies", "call"]

_switch = Switch("VISUALMIXER_TRITON", default=False)
_failed: list[str] = []  # why a kernel could not run (then: eager from now on)
_checked: set = set()  # (kernel, variant, device) whose first result equalled the eager one
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


def call(name: str, *args: Any, eager: Callable[[], Any], variant: Hashable = ()):
    """``triton_kernels.<name>(*args)`` where the kernels apply to ``args[0]`` (:func:`applies`);
    ``eager()`` elsewhere, where the kernel does not take the call (it returns None) or where it
    cannot run (said once; eager from then on).

    The first call of each (``name``, ``variant``, device) also computes ``eager()`` and
    compares the two (one host synchronisation, once per variant and process; not during a
    CUDA graph capture, which a synchronisation would break): a kernel whose integers differ is
    switched off with a ``RuntimeWarning`` and the eager result returned. ``variant`` names
    what selects a different compiled kernel (a row length, a region side, a mode).
    """
    if not applies(args[0]):
        return eager()
    device = args[0].device
    try:
        kernels = importlib.import_module("visualmixer.core.triton_kernels")
        got = getattr(kernels, name)(*args)
    except Exception as exc:  # noqa: BLE001 - Triton missing, or a kernel that does not build
        return _fall_back(f"cannot run ({type(exc).__name__}: {str(exc)[:200]})", eager)
    if got is None:
        return eager()
    check = (name, variant, str(device))
    if check not in _checked and not (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        want = eager()
        if not _same(got, want):
            return _fall_back(f"gave other integers than the eager path ({name}, {variant}, {device})",
                              lambda: want)
        _checked.add(check)
    return got


def _same(got, want) -> bool:
    if isinstance(want, torch.Tensor):
        return isinstance(got, torch.Tensor) and got.shape == want.shape and torch.equal(got, want)
    return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))


def _fall_back(why: str, eager: Callable[[], Any]):
    _failed.append(why)
    warnings.warn(f"visualmixer: a Triton kernel {why}; computing eagerly from now on", RuntimeWarning,
                  stacklevel=4)
    return eager()
