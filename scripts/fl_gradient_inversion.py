"""DLG-style gradient inversion against one federated client's update.

An honest-but-curious server sees the gradient a client computes on ONE training image (batch 1,
label known to the attacker — the iDLG setting, stronger than plain DLG) and optimises a dummy
image until its gradient matches (L-BFGS on the squared gradient distance, Zhu et al. 2019), on a
tiny sigmoid LeNet (twice differentiable, the model DLG was shown on). With plain FL the client's
image is the original; with VisualMixer FL it is the client's locally obfuscated image. We score
the reconstruction against both with SSIM (visualmixer.eval.metrics.ssim).

    python scripts/fl_gradient_inversion.py --images 4 --out out/fl/dlg.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import visualmixer as vm
from visualmixer.data.datasets import load_dataset
from visualmixer.eval.metrics import ssim


class LeNetSig(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=1), nn.Sigmoid(),
            nn.Flatten(), nn.Linear(12 * 7 * 7, 10))

    def forward(self, x):
        return self.body(x)


def client_grad(model, x, y):
    loss = nn.functional.cross_entropy(model(x), y)
    return [g.detach() for g in torch.autograd.grad(loss, model.parameters())]


def invert(model, target_grads, y, shape, steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    dummy = torch.rand(shape, generator=g).requires_grad_(True)
    opt = torch.optim.LBFGS([dummy], lr=1.0, max_iter=20, history_size=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(dummy), y)
        grads = torch.autograd.grad(loss, model.parameters(), create_graph=True)
        d = sum(((a - b) ** 2).sum() for a, b in zip(grads, target_grads, strict=True))
        d.backward()
        return d

    last = None
    for _ in range(steps):
        last = float(opt.step(closure).detach())
    return dummy.detach().clamp(0, 1), last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--target-vfe", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=30, help="L-BFGS outer steps (20 iterations each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/fl/dlg.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset("fashion-mnist", "train", channels=1).subset(a.images, seed=a.seed)
    key = vm.Key.from_seed(a.seed)  # the client's key; the server never has it
    obf = vm.obfuscate(ds.images, key=key, ids=list(range(a.images)), target_vfe=a.target_vfe).images
    x0, xo = ds.images.float() / 255, obf.float() / 255
    rows = []
    t0 = time.perf_counter()
    for i in range(a.images):
        torch.manual_seed(a.seed + i)
        model = LeNetSig()
        y = ds.labels[i : i + 1]
        row = {"index": i, "label": int(y)}
        for setting, x_client in (("plain FL", x0), ("VisualMixer FL", xo)):
            rec, dist = invert(model, client_grad(model, x_client[i : i + 1], y), y, (1, 1, 28, 28), a.steps,
                               a.seed + 100 + i)
            row[setting] = {"grad_distance": dist,
                            "ssim_to_original": float(ssim(x0[i : i + 1], rec)[0]),
                            "ssim_to_obfuscated": float(ssim(xo[i : i + 1], rec)[0])}
        row["ssim_original_vs_obfuscated"] = float(ssim(x0[i : i + 1], xo[i : i + 1])[0])
        rows.append(row)
        print(json.dumps(row))
    summ = {}
    for setting in ("plain FL", "VisualMixer FL"):
        for m in ("ssim_to_original", "ssim_to_obfuscated"):
            v = [r[setting][m] for r in rows]
            summ[f"{setting}: {m}"] = {"mean": statistics.fmean(v), "min": min(v), "max": max(v)}
    v = [r["ssim_original_vs_obfuscated"] for r in rows]
    summ["original vs obfuscated (reference)"] = {"mean": statistics.fmean(v), "min": min(v), "max": max(v)}
    out = {"config": vars(a), "rows": rows, "summary": summ, "seconds": time.perf_counter() - t0}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(summ, indent=1))


if __name__ == "__main__":
    main()
