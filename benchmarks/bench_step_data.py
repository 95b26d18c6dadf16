"""What obfuscated images cost the training step itself: a model's training step on clean and on
obfuscated batches of the same images, timed alternately in one process (no obfuscation inside
the timing), and the operators that differ.

    OMP_NUM_THREADS=1 python benchmarks/bench_step_data.py            # small CNN, Fashion-MNIST
    OMP_NUM_THREADS=1 python benchmarks/bench_step_data.py --model resnet18 --batches 10
    OMP_NUM_THREADS=1 python benchmarks/bench_step_data.py --amax-pool   # max-pools as reshape + amax
    OMP_NUM_THREADS=1 python benchmarks/bench_step_data.py --channels-last   # the model in channels-last

The shapes, the model and the optimizer are the same; only the pixel values differ. Where an
operator branches on the data (max-pooling's comparisons, ReLU's backward), shuffled pixels are
less predictable than smooth images with flat backgrounds, and the step takes longer: a cost that
offline and online training on obfuscated images both pay, and that no obfuscation pipeline can
remove. Process CPU time; for reading, nothing asserts on it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

import visualmixer as vm
from visualmixer.core.imageops import to_float
from visualmixer.data.datasets import load_fashion_mnist
from visualmixer.train.models import build_model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn")
    p.add_argument("--batches", type=int, default=40, help="batches of 128 per timed pass")
    p.add_argument("--rounds", type=int, default=6, help="alternating clean/obfuscated passes")
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--amax-pool", action="store_true",
                   help="replace the model's 2x2 max-pools by a reshape and amax (no per-element branch): "
                        "is the difference in pooling's comparisons?")
    p.add_argument("--channels-last", action="store_true", help="the model in channels-last memory format "
                   "(visualmixer train --channels-last)")
    a = p.parse_args(argv)
    data = load_fashion_mnist("train")
    n = 128 * a.batches
    clean = data.images[:n]
    obfuscated = vm.obfuscate(clean, key=vm.Key.from_seed(0), ids=range(n), target_vfe=a.target).images
    labels = data.labels[:n]
    torch.manual_seed(0)
    model = build_model(a.model, 1, 10)
    if a.amax_pool:
        _swap_pools(model)
    if a.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def one_pass(images: torch.Tensor) -> float:
        t = time.process_time()
        for i in range(0, n, 128):
            loss = torch.nn.functional.cross_entropy(model(to_float(images[i:i + 128])), labels[i:i + 128])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.process_time() - t

    times: dict[str, list[float]] = {"clean": [], "obfuscated": []}
    one_pass(clean)  # warm up
    for _ in range(a.rounds):
        times["clean"].append(one_pass(clean))
        times["obfuscated"].append(one_pass(obfuscated))
    med = {k: float(np.median(v)) for k, v in times.items()}
    layout = " (channels-last)" if a.channels_last else ""
    print(f"{a.model}{layout}, {n} images per pass, {torch.get_num_threads()} torch thread(s), process CPU time")
    for k, v in times.items():
        print(f"  {k:10s} median {med[k]:.3f} s  ({', '.join(f'{t:.3f}' for t in v)})")
    print(f"  obfuscated / clean: {med['obfuscated'] / med['clean']:.3f}x\n")

    per_op = {}
    for name, images in (("clean", clean), ("obfuscated", obfuscated)):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            one_pass(images)
        per_op[name] = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    print(f"{'operator (self CPU, one pass)':40s} {'clean ms':>9s} {'obf ms':>9s} {'ratio':>6s}")
    for key in sorted(per_op["clean"], key=lambda k: -per_op["clean"][k])[:12]:
        c, o = per_op["clean"][key], per_op["obfuscated"].get(key, 0.0)
        print(f"{key:40s} {c / 1e3:9.1f} {o / 1e3:9.1f} {o / c:6.3f}")


class AmaxPool2x2(torch.nn.Module):
    """2×2 max-pool, stride 2, as a reshape and ``amax``: the same forward values as ``MaxPool2d(2)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x[..., : h - h % 2, : w - w % 2].reshape(n, c, h // 2, 2, w // 2, 2).amax(dim=(3, 5))


def _swap_pools(model: torch.nn.Module) -> None:
    for name, child in model.named_children():
        if isinstance(child, torch.nn.MaxPool2d) and child.kernel_size in (2, (2, 2)) and child.stride in (2, (2, 2)):
            setattr(model, name, AmaxPool2x2())
        else:
            _swap_pools(child)


if __name__ == "__main__":
    main()
