"""CUDA graphs for the sync-free accelerator path of :func:`~visualmixer.core.mixer.obfuscate`
and :func:`~visualmixer.core.mixer.restore`.

On a GPU one ``obfuscate`` call is about a thousand small operators, each launched by the host:
the call is host-bound (measured on an H200: host 25 ms, GPU busy 15 ms of a 224² batch of 256).
Because the accelerator path never synchronises with the host and its operators depend only on
the shapes and the options, the launches can be recorded once as a CUDA graph and replayed with
one call. A graph is captured per (function, options, input shapes, dtypes and device), the
second time that combination is seen on a CUDA device (:data:`CAPTURE_ON_CALL`; one-off calls
stay eager), and kept (the :data:`MAX_GRAPHS` most recently used; each holds its own memory
pool of the call's intermediates). The replayed graph
runs the same kernels on the same inputs, so the output bytes are those of the eager call.

A capture that fails (an operator the CUDA build cannot capture) is reported once with a
``RuntimeWarning`` and that combination runs eagerly from then on. Switch graphs off with
:func:`set_enabled` or the environment variable ``VISUALMIXER_CUDA_GRAPHS=0``.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

from visualmixer.core.switches import Switch

__all__ = ["MAX_GRAPHS", "applies", "run", "set_enabled", "enabled", "clear"]

#: How many captured graphs are kept (least recently used dropped first).
MAX_GRAPHS = 4

#: A combination is captured on its this-many-th call (the calls before run eagerly), so that
#: one-off shapes (a data set's last partial batch, a single call) do not hold a graph's memory.
CAPTURE_ON_CALL = 2

_switch = Switch("VISUALMIXER_CUDA_GRAPHS", default=True)
_lock = threading.Lock()
_graphs: OrderedDict[Hashable, _Graph] = OrderedDict()
_calls: OrderedDict[Hashable, int] = OrderedDict()  # eager calls of combinations not captured yet
_failed: set = set()  # combinations whose capture failed: eager, warned once


@dataclass
class _Graph:
    graph: object  # torch.cuda.CUDAGraph (or a stand-in in tests)
    inputs: tuple[torch.Tensor, ...]
    outputs: tuple[torch.Tensor, ...]
    done: object = field(default=None)  # event after the last replay's reads of inputs/outputs


def set_enabled(enabled: bool) -> bool:
    """Use CUDA graphs on CUDA devices (default: yes, unless ``VISUALMIXER_CUDA_GRAPHS=0``).

    Returns the previous setting."""
    return _switch.set(enabled)


def enabled() -> bool:
    """Whether CUDA graphs are used on CUDA devices."""
    return _switch.on


def clear() -> None:
    """Drop every captured graph (and with it the device memory its pool holds), after the
    work queued on the devices is done (a replay may still be reading a graph's buffers)."""
    with _lock:
        if _graphs and torch.cuda.is_available():
            torch.cuda.synchronize()
        _graphs.clear()
        _calls.clear()
        _failed.clear()


def applies(t: torch.Tensor) -> bool:
    """Whether a call on ``t`` runs through a graph: enabled, on CUDA, not inside a capture of
    the caller's own (``torch.cuda.graphs`` capture the eager path as any other work), and
    ``t`` not requiring gradients (a graph records no autograd history)."""
    return (_switch.on and t.device.type == "cuda" and not t.requires_grad
            and not torch.cuda.is_current_stream_capturing())


def _numerics() -> tuple:
    """The global settings that change what the recorded kernels compute (autocast, TF32 and
    matmul precision, deterministic algorithms): part of a graph's signature."""
    try:
        autocast = torch.is_autocast_enabled("cuda")
    except TypeError:  # older torch: no device argument
        autocast = torch.is_autocast_enabled()
    return (torch.is_inference_mode_enabled(), autocast, torch.get_float32_matmul_precision(),
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.are_deterministic_algorithms_enabled())


def run(name: str, options: Hashable, fn: Callable[..., tuple[torch.Tensor, ...]], *inputs: torch.Tensor):
    """``fn(*inputs)`` (a tuple of tensors), replayed from the graph of (``name``, ``options``,
    the inputs' shapes, dtypes and device, the numerics settings), captured on its
    :data:`CAPTURE_ON_CALL`-th call (eager before).

    ``fn`` must be a pure function of its tensor inputs and of ``options``, with no host
    synchronisation. The outputs are fresh tensors (copies of the graph's own), on the caller's
    current stream.
    """
    device = inputs[0].device
    signature = (name, options, _numerics(), tuple((tuple(t.shape), t.dtype, t.device) for t in inputs))
    with _lock:
        entry = _graphs.get(signature)
        if entry is not None:
            _graphs.move_to_end(signature)
            with _on(device):
                return _replay(entry, inputs)
        if signature not in _failed:
            _calls[signature] = _calls.pop(signature, 0) + 1
            while len(_calls) > 64:  # (a bounded memory of the combinations seen)
                _calls.popitem(last=False)
            if _calls[signature] >= CAPTURE_ON_CALL:
                del _calls[signature]
                with _on(device):
                    entry = _capture(name, fn, inputs)
                if entry is None:
                    _failed.add(signature)  # reported once; eager from now on
                else:
                    _graphs[signature] = entry
                    while len(_graphs) > MAX_GRAPHS:
                        _graphs.popitem(last=False)
                    with _on(device):
                        return _replay(entry, inputs)
    return fn(*inputs)  # (eager calls run outside the lock: other threads' calls go on meanwhile)


def _on(device: torch.device):
    """The inputs' CUDA device as the current one (graphs record and replay on the current
    device); nothing elsewhere."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _replay(entry: _Graph, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Copy in, replay, copy out, on the current stream, after the previous replay's copies
    (which may have run on another thread's stream) are done with the graph's buffers."""
    stream = torch.cuda.current_stream(inputs[0].device) if inputs[0].device.type == "cuda" else None
    if entry.done is not None and stream is not None:
        stream.wait_event(entry.done)
    for static, t in zip(entry.inputs, inputs, strict=True):
        static.copy_(t, non_blocking=True)
    entry.graph.replay()
    outputs = tuple(o.clone() for o in entry.outputs)
    if stream is not None:
        entry.done = torch.cuda.Event()
        entry.done.record(stream)
    return outputs


def _capture(name: str, fn, inputs: tuple[torch.Tensor, ...]) -> _Graph | None:
    """A graph of ``fn`` on static copies of ``inputs``; ``None``, with a warning, if the
    recording fails (errors of ``fn`` itself, seen in the warm-up, are raised)."""
    static = tuple(t.clone() for t in inputs)
    _warm_up(fn, static)
    try:
        graph, outputs = _record(fn, static)
    except Exception as exc:  # noqa: BLE001 - any capture failure means: run this one eagerly
        warnings.warn(f"visualmixer: could not capture {name} as a CUDA graph ({type(exc).__name__}: {exc}); "
                      "running it eagerly", RuntimeWarning, stacklevel=4)
        return None
    return _Graph(graph, static, outputs)


def _warm_up(fn, static: tuple[torch.Tensor, ...]) -> None:
    """Run ``fn`` once on a side stream, so that lazy caches, FFT plans and library handles are
    made outside the capture (as the CUDA graphs notes of PyTorch ask)."""
    current = torch.cuda.current_stream(static[0].device)
    side = torch.cuda.Stream(static[0].device)
    side.wait_stream(current)
    with torch.cuda.stream(side):
        fn(*static)
    current.wait_stream(side)


def _record(fn, static: tuple[torch.Tensor, ...]):
    """``(graph, outputs)``: ``fn(*static)`` recorded as a CUDA graph (not run)."""
    graph = torch.cuda.CUDAGraph()
    device = static[0].device
    current = torch.cuda.current_stream(device)
    try:
        # thread_local: the training loop may launch work from another thread meanwhile; a
        # capture stream of the inputs' device
        with torch.cuda.graph(graph, stream=torch.cuda.Stream(device), capture_error_mode="thread_local"):
            outputs = tuple(fn(*static))
    finally:  # a failed capture leaves the capture stream current (its exit raises first)
        torch.cuda.set_stream(current)
    return graph, outputs
