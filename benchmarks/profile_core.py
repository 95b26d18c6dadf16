"""Where the time of one ``obfuscate`` and one ``restore`` call goes (torch.profiler).

    python benchmarks/profile_core.py --device cuda --size 224 --batch 256

Prints, per call, the wall time (synchronised), the host time spent issuing work, and the
operators with the most device (or CPU) time. For reading, not for asserting: the timings
that docs/performance.md reports come from ``bench_core.py``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

import visualmixer as vm
from visualmixer.data.samples import builtin_photos


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(size: int, n: int, device: torch.device) -> torch.Tensor:
    _, x = builtin_photos(size)
    return x.repeat(-(-n // len(x)), 1, 1, 1)[:n].contiguous().to(device)


#: Operators that launch no arithmetic of their own (views, allocations, dtype checks).
_NOT_COMPUTE = {"view", "reshape", "as_strided", "slice", "select", "unsqueeze", "squeeze", "expand", "permute", "t",
                "transpose", "detach", "_unsafe_view", "flatten", "expand_as", "empty", "empty_strided", "empty_like",
                "to", "narrow", "alias", "view_as", "resolve_conj", "resolve_neg", "result_type", "lift_fresh",
                "split", "unbind", "chunk", "contiguous", "unflatten", "set_", "new_empty"}


def _compute_calls(prof) -> int:
    """Operators called by the library itself (not inside another operator) that compute
    something: what a GPU launches one or more kernels for, roughly."""
    count = 0
    for event in prof.events():
        name = event.name.removeprefix("aten::")
        if event.name.startswith("aten::") and name not in _NOT_COMPUTE:
            parent = event.cpu_parent
            while parent is not None and not parent.name.startswith("aten::"):
                parent = parent.cpu_parent
            count += parent is None
    return count


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--rows", type=int, default=15, help="operators listed per table")
    p.add_argument("--sync-free", action="store_true",
                   help="run the CPU through the accelerator's path (no host decisions: every level "
                        "the planner may need, masks instead of skips), to see its work without a GPU")
    p.add_argument("--grey", action="store_true", help="one channel (the photos' first)")
    p.add_argument("--triton", action="store_true",
                   help="switch the core's Triton kernels on (on the CPU: run them in Triton's interpreter, for "
                        "counting operators, not timing)")
    p.add_argument("--memory", action="store_true",
                   help="also count the bytes each call allocates (CPU; its memory traffic beside a training step)")
    a = p.parse_args(argv)
    if a.sync_free:
        from visualmixer.core import keyed

        keyed._FORCE_SYNC_FREE = True
    device = torch.device(a.device)
    if a.triton:
        from visualmixer.core import triton_switch

        triton_switch.set_enabled(True)
        if device.type == "cpu":  # (read when the kernels' module is first imported, on the first call)
            os.environ["TRITON_INTERPRET"] = "1"
            triton_switch._DEVICES = ("cpu",)
    x = _batch(a.size, a.batch, device)
    x = x[:, :1].contiguous() if a.grey else x
    key, ids = vm.Key.from_seed(0), range(a.batch)
    res = vm.obfuscate(x, key=key, ids=ids, target_vfe=a.target)  # warm caches, cuFFT plans
    vm.restore(res.images, res.plans, key=key, ids=ids)
    calls = {
        "obfuscate": lambda: vm.obfuscate(x, key=key, ids=ids, target_vfe=a.target),
        "restore": lambda: vm.restore(res.images, res.plans, key=key, ids=ids),
    }
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for name, call in calls.items():
        _sync(device)
        t0 = time.perf_counter()
        call()
        issued = time.perf_counter() - t0
        _sync(device)
        wall = time.perf_counter() - t0
        with profile(activities=activities, profile_memory=a.memory) as prof:
            call()
            _sync(device)
        events = prof.key_averages()
        print(f"== {name}: {a.size}² batch {a.batch} on {device}: wall {wall * 1e3:.2f} ms "
              f"(host returned after {issued * 1e3:.2f} ms), {a.batch / wall:,.0f} img/s, "
              f"{sum(e.count for e in events)} operator calls, {_compute_calls(prof)} of them "
              "top-level compute operators")
        if a.memory:
            allocated = sum(max(0, e.self_cpu_memory_usage) for e in events)
            ratio = allocated / (x.numel() * x.element_size())
            print(f"   allocated {allocated / 2**20:.1f} MiB ({ratio:.0f}x the input)")
        print(events.table(sort_by=sort, row_limit=a.rows, max_name_column_width=48))
        if device.type == "cuda":
            print(events.table(sort_by="self_cpu_time_total", row_limit=a.rows // 2, max_name_column_width=48))


if __name__ == "__main__":
    main()
