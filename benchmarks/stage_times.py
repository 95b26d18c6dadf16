"""Process CPU time of each stage of one ``obfuscate`` and one ``restore`` call (CPU).

    python benchmarks/stage_times.py --size 32 --batch 256
    python benchmarks/stage_times.py --size 224 --batch 64 --target 0.8

Wraps the core's internal stages (saliency, region layout, sums, keys, permutations, shuffles,
seams...) with a process-time counter and prints the milliseconds each takes per call, averaged
over ``--calls`` calls after a warm-up, with the call's user and system time and its page
faults (``resource.getrusage``: temporaries made afresh each call show up as system time).
Times are inclusive (a stage's time contains the stages it calls); a stage the code in use does
not have is left out, so the same command times an older commit (``PYTHONPATH=<worktree>/src``).
Unlike ``profile_core.py`` (torch.profiler, which inflates small operators) these are the
plain run's times; one torch thread.
"""

from __future__ import annotations

import argparse
import functools
import resource
import time

import torch

import visualmixer as vm
from visualmixer.core import keyed, mixer, permute, planner, saliency
from visualmixer.data.samples import builtin_photos

#: (module, name) of each stage, where the caller looks the name up.
STAGES = [
    (saliency, "spectral_residual"), (mixer, "to_regions"), (mixer, "_make_job"), (mixer, "_run_job"),
    (planner, "_source_sums"), (planner, "ladder_keys"), (planner, "_level_scores"), (planner, "level_sources"),
    (planner, "shuffle_level"), (planner, "_seams"), (planner, "_known_plans"), (planner, "_select_levels"),
    (mixer, "from_regions"), (mixer, "shuffle_image"), (permute, "ladder_keys"), (permute, "level_sources"),
    (permute, "_move_image_tiles"), (permute, "_move_tile_rows"), (keyed, "_lane_keys_eager"),
    (keyed, "_slot_keys"), (keyed, "_sorted_order"),
]


def _wrap(totals: dict, module, name: str) -> None:
    inner = getattr(module, name)

    @functools.wraps(inner)
    def timed(*args, **kwargs):
        t0 = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            label = f"{module.__name__.rsplit('.', 1)[-1]}.{name}"
            totals[label] = totals.get(label, 0.0) + time.process_time() - t0

    setattr(module, name, timed)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--grey", action="store_true", help="one channel (the photos' first)")
    p.add_argument("--calls", type=int, default=7)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    _, x = builtin_photos(a.size)
    x = x.repeat(-(-a.batch // len(x)), 1, 1, 1)[: a.batch].contiguous()
    x = x[:, :1].contiguous() if a.grey else x
    key, ids = vm.Key.from_seed(0), range(a.batch)
    totals: dict[str, float] = {}
    for module, name in STAGES:
        if hasattr(module, name):
            _wrap(totals, module, name)
    res = vm.obfuscate(x, key=key, ids=ids, target_vfe=a.target)
    calls = {"obfuscate": lambda: vm.obfuscate(x, key=key, ids=ids, target_vfe=a.target),
             "restore": lambda: vm.restore(res.images, res.plans, key=key, ids=ids)}
    for name, call in calls.items():
        call()  # warm-up
        totals.clear()
        before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
        for _ in range(a.calls):
            call()
        total, after = (time.process_time() - t0) / a.calls, resource.getrusage(resource.RUSAGE_SELF)
        user, system = ((getattr(after, f) - getattr(before, f)) / a.calls for f in ("ru_utime", "ru_stime"))
        faults = (after.ru_minflt - before.ru_minflt) // a.calls
        print(f"== {name}: {a.size}² batch {a.batch}, target {a.target}: {total * 1e3:.2f} ms a call "
              f"({a.batch / total:,.0f} img/s; user {user * 1e3:.1f} ms, system {system * 1e3:.1f} ms, "
              f"{faults} page faults)")
        for label, seconds in totals.items():
            print(f"   {label:28s} {seconds / a.calls * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
