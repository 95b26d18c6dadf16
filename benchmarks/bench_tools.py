"""Benchmark of the dataset tools: a folder of PNG images end to end (read, decode, obfuscate,
encode, write, manifest), single process, ``--workers N`` and ``--dask local``, plus the share of
time in PNG decode / obfuscation / PNG encode / file I/O, measured stage by stage.

Usage::

    python benchmarks/bench_tools.py                 # 2,000 images of 224x224, all three modes
    python benchmarks/bench_tools.py --n 500 --json out/bench_tools.json

The images are generated (smooth, photo-like colour fields with noise, so PNG sizes and VFE
behave like photographs'); nothing is downloaded. The Dask mode starts a LocalCluster on
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import visualmixer as vm
from visualmixer.tools import imageio as vio
from visualmixer.tools.folders import FolderOptions, obfuscate_folder


def photo_like(size: int, seed: int) -> np.ndarray:
    """A smooth colour image with texture and noise (PNG ~ 100-150 kB at 224², like photos)."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, (3, 8, 8)).astype(np.float32)
    t = torch.nn.functional.interpolate(torch.from_numpy(low)[None], size=(size, size),
                                        mode="bicubic", align_corners=False)[0].numpy()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    t += 25 * np.sin(xx * rng.uniform(0.05, 0.3) + yy * rng.uniform(0.05, 0.3))[None]
    t += rng.normal(0, 8, t.shape).astype(np.float32)
    return np.clip(t, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def make_folder(root: Path, n: int, size: int) -> None:
    for i in range(n):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo_like(size, i)).save(folder / f"img{i:05d}.png")


def stage_shares(src: Path, key: vm.Key, n: int, batch: int = 16) -> dict[str, float]:
    """Seconds per image in each stage, run like one worker runs them (1 intra-op thread)."""
    files = sorted(src.rglob("*.png"))[:n]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t = {"read": 0.0, "decode": 0.0, "obfuscate": 0.0, "encode": 0.0, "write": 0.0}
    out = Path(tempfile.mkdtemp(prefix="vm-bench-stage-"))
    try:
        for start in range(0, len(files), batch):
            chunk = files[start:start + batch]
            t0 = time.perf_counter()
            raw = [p.read_bytes() for p in chunk]
            t1 = time.perf_counter()
            px = torch.stack([vio.decode_image(b).pixels for b in raw])
            t2 = time.perf_counter()
            res = vm.obfuscate(px, key=key, ids=[p.name for p in chunk], target_vfe=0.5)
            t3 = time.perf_counter()
            data = [vio.encode_image(img, "png") for img in res.images]
            t4 = time.perf_counter()
            for p, d in zip(chunk, data, strict=True):
                vio.write_bytes_atomic(out / p.name, d, overwrite=True)
            t5 = time.perf_counter()
            for k, a, b in (("read", t0, t1), ("decode", t1, t2), ("obfuscate", t2, t3),
                            ("encode", t3, t4), ("write", t4, t5)):
                t[k] += b - a
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(out, ignore_errors=True)
    return {k: v / len(files) for k, v in t.items()}


def run_mode(src: Path, work: Path, key: vm.Key, key_path: Path, name: str, **kw) -> dict:
    dst = work / f"dst-{name}"
    t0 = time.perf_counter()
    summary = obfuscate_folder(src, dst, key, key_path=key_path,
                               manifest=work / f"{name}.manifest.jsonl",
                               options=FolderOptions(target_vfe=0.5), progress=False, **kw)
    seconds = time.perf_counter() - t0
    if summary.failed or summary.done == 0:
        raise RuntimeError(f"{name}: {summary.failed} failed, {summary.done} done")
    return {"mode": name, "images": summary.done, "seconds": seconds,
            "images_per_s": summary.done / seconds, "dst": dst}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    ap.add_argument("--size", type=int, default=224, help="image side (default 224)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes for the workers mode")
    ap.add_argument("--modes", default="single,workers,dask",
                    help="comma-separated: single, workers, dask (default all)")
    ap.add_argument("--stage-images", type=int, default=256,
                    help="images used for the stage breakdown (default 256)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="vm-bench-tools-"))
    try:
        src = work / "src"
        t0 = time.perf_counter()
        make_folder(src, args.n, args.size)
        gen_s = time.perf_counter() - t0
        mb = sum(p.stat().st_size for p in src.rglob("*.png")) / 1e6
        key_path = work / "bench.key"
        key = vm.Key.generate()
        key.save(key_path)
        print(f"{args.n} PNG images {args.size}x{args.size} ({mb:.0f} MB) generated in {gen_s:.1f} s",
              file=sys.stderr)
        rows = []
        for name in args.modes.split(","):
            kw = {"single": {}, "workers": {"workers": args.workers},
                  "dask": {"dask": "local", "workers": args.workers}}[name]
            label = {"single": "single process", "workers": f"--workers {args.workers}",
                     "dask": f"--dask local ({max(2, args.workers)} workers)"}[name]
            row = run_mode(src, work, key, key_path, name, **kw)
            row["label"] = label
            rows.append(row)
            print(f"{label}: {row['images_per_s']:.1f} images/s", file=sys.stderr)
        ref = vio_tree(rows[0]["dst"])
        identical = all(vio_tree(r["dst"]) == ref for r in rows[1:])
        shares = stage_shares(src, key, min(args.stage_images, args.n))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    total = sum(shares.values())
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), "
          f"torch {torch.__version__}, Python {platform.python_version()}")
    print(f"command: python benchmarks/bench_tools.py --n {args.n} --size {args.size} "
          f"--workers {args.workers}\n")
    print("| mode | images | seconds | images/s | speed-up |")
    print("|---|---|---|---|---|")
    base = rows[0]["images_per_s"]
    for r in rows:
        print(f"| {r['label']} | {r['images']} | {r['seconds']:.1f} | {r['images_per_s']:.1f} | "
              f"{r['images_per_s'] / base:.2f}x |")
    print(f"\noutputs byte-identical across modes: {identical}\n")
    print(f"| stage (1 thread, {min(args.stage_images, args.n)} images) | ms / image | share |")
    print("|---|---|---|")
    for k, v in shares.items():
        print(f"| {k} | {1000 * v:.1f} | {100 * v / total:.0f} % |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "n": args.n, "size": args.size, "identical": identical, "stages_s_per_image": shares,
            "modes": [{k: v for k, v in r.items() if k != "dst"} for r in rows],
        }, indent=1))
    return 0 if identical else 1


def vio_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


if __name__ == "__main__":
    sys.exit(main())
