"""What a rerun of a finished ``visualmixer obfuscate`` costs, and how much of it is the check of
the finished outputs (:mod:`visualmixer.tools.safe_io`).

A folder of N images is made from the built-in photos (224 px, six classes, each photo rolled by
a different offset per image, so every file differs), obfuscated once, then obfuscated again with
nothing left to do: first once to warm the page cache, then ``--reps`` times, timed. Reported per
mode (plain, ``--mix K``, ``--rename``): the wall time of the no-op rerun in this process (the
median), the seconds spent checking the finished outputs and their share, how many outputs were
hashed, and the wall time of the same rerun as a command (``visualmixer obfuscate ... -q`` in a
fresh interpreter: imports included). Where the installed version has ``--verify-outputs``, a
rerun with it (every output hashed) is timed as well. With ``--cold``, the reruns are timed again
with the outputs dropped from the page cache first (``posix_fadvise(DONTNEED)`` on each output
file: only this benchmark's files leave the cache), as for a destination too large to stay
cached.

Usage::

    python benchmarks/bench_resume.py                        # 3,000 images, plain mode
    python benchmarks/bench_resume.py --n 3000 --modes plain,mix,rename --cold --work /tmp/vm-resume

``--work DIR`` keeps the folders (made once, reused by later calls with the same ``--n``), so
two versions of the code can be timed on the same files; without it a temporary folder is used
and removed.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import visualmixer as vm
from visualmixer.tools import folders, mixrun, safe_io
from visualmixer.tools.folders import FolderOptions, obfuscate_folder

MODES = {
    "plain": ({}, []),
    "mix": ({"mix": 4}, ["--mix", "4"]),
    "rename": ({"rename": True}, ["--rename"]),
}


def make_src(src: Path, n: int, size: int) -> None:
    """``n`` PNG files under ``src/<photo>/``, each a built-in photo rolled by its own offset."""
    from visualmixer.data.samples import builtin_photos

    stamp = src / ".made"
    if stamp.exists() and stamp.read_text() == f"{n} {size}":
        return
    shutil.rmtree(src, ignore_errors=True)
    names, photos = builtin_photos(size)
    for i in range(n):
        j, step = i % len(names), i // len(names)
        img = torch.roll(photos[j], shifts=(step % size, (7 * step) % size), dims=(1, 2))
        path = src / names[j] / f"img{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)
    stamp.write_text(f"{n} {size}")


class Instrument:
    """Times the resume's output checks: the outer check (``OutputCheck.intact`` where it exists,
    else ``output_intact`` as folders and mixrun call it) and counts the files hashed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.hashed = 0
        self._undo: list[tuple[object, str, object]] = []

    def _patch(self, owner, name: str, fn) -> None:
        self._undo.append((owner, name, getattr(owner, name)))
        setattr(owner, name, fn)

    def __enter__(self) -> Instrument:
        real_hash = safe_io.output_intact

        def hashed(path, rec):
            self.hashed += rec.get("sha256") is not None
            return real_hash(path, rec)

        def timed(real):
            def check(*args, **kwargs):
                t0 = time.perf_counter()
                try:
                    return real(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - t0
            return check

        self._patch(safe_io, "output_intact", hashed)
        if hasattr(safe_io, "OutputCheck"):
            self._patch(safe_io.OutputCheck, "intact", timed(safe_io.OutputCheck.intact))
        for mod in (folders, mixrun):
            if hasattr(mod, "output_intact"):
                self._patch(mod, "output_intact", timed(hashed))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, old in reversed(self._undo):
            setattr(owner, name, old)


def has_verify() -> bool:
    return "verify_outputs" in inspect.signature(obfuscate_folder).parameters


def evict(root: Path) -> None:
    """Drop the files under ``root`` from the page cache (they are written and fsynced: clean)."""
    for path in root.rglob("*.png"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def rerun(src: Path, dst: Path, key, key_path: Path, man: Path, options: FolderOptions, *,
          cold: bool = False, **kw) -> dict:
    if cold:
        evict(dst)
    with Instrument() as ins:
        t0 = time.perf_counter()
        summary = obfuscate_folder(src, dst, key, key_path=key_path, manifest=man, options=options,
                                   progress=False, **kw)
        wall = time.perf_counter() - t0
    if summary.done or summary.failed:
        raise RuntimeError(f"not a no-op rerun: {summary.done} done, {summary.failed} failed")
    return {"wall_s": wall, "check_s": ins.seconds, "hashed": ins.hashed, "already": summary.already}


def cli_wall(args: list[str], reps: int) -> float:
    exe = [sys.executable, "-m", "visualmixer"]
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run([*exe, *args], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed(label: str, reps: int, again) -> dict:
    runs = [again() for _ in range(reps)]
    return {"label": label, "wall_s": statistics.median(r["wall_s"] for r in runs),
            "check_s": statistics.median(r["check_s"] for r in runs), "hashed": runs[-1]["hashed"]}


def bench_mode(mode: str, work: Path, src: Path, key, key_path: Path, reps: int, cold: bool) -> dict:
    opt_kw, cli_extra = MODES[mode]
    options = FolderOptions(**opt_kw)
    dst, man = work / f"dst-{mode}", work / f"{mode}.manifest.jsonl"
    first = None
    if not man.exists():
        t0 = time.perf_counter()
        s = obfuscate_folder(src, dst, key, key_path=key_path, manifest=man, options=options,
                             progress=False)
        first = time.perf_counter() - t0
        print(f"{mode}: first run {s.done} images in {first:.1f} s", file=sys.stderr)
        # the outputs of the run's last seconds are hashed until a rerun more than twice the racy
        # margin later signs them (safe_io.OutputCheck): wait, so the reruns timed are the usual
        time.sleep(2 * getattr(safe_io, "RACY_MARGIN_NS", 0) / 1e9)
    warm = rerun(src, dst, key, key_path, man, options)  # warms the cache; signs what it hashed
    row = {"mode": mode, "first_run_s": first, "images": warm["already"], "first_rerun": warm,
           "dst_mb": sum(p.stat().st_size for p in dst.rglob("*.png")) / 1e6, "runs": []}
    cmd = ["obfuscate", str(src), str(dst), "--key", str(key_path), "--manifest", str(man), "-q",
           *cli_extra]
    variants = [("", {}, [])] + ([("--verify-outputs", {"verify_outputs": True}, ["--verify-outputs"])]
                                 if has_verify() else [])
    for flag, kw, args in variants:
        run = timed(flag, reps, lambda kw=kw: rerun(src, dst, key, key_path, man, options, **kw))
        run["cli_wall_s"] = cli_wall([*cmd, *args], reps)
        row["runs"].append(run)
        if cold:
            row["runs"].append(timed(f"{flag} cold".strip(), reps, lambda kw=kw: rerun(
                src, dst, key, key_path, man, options, cold=True, **kw)))
    return row


def report(rows: list[dict], args) -> None:
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), "
          f"Python {platform.python_version()}, torch {torch.__version__}")
    print(f"command: python benchmarks/bench_resume.py --n {args.n} --modes {args.modes} "
          f"--reps {args.reps}{' --cold' if args.cold else ''}\n")
    print("| mode | outputs (MB) | rerun | no-op rerun, in process | checking outputs | share | "
          "hashed | as a command |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for run in r["runs"]:
            cli = f"{run['cli_wall_s']:.2f} s" if "cli_wall_s" in run else "-"
            print(f"| {r['mode']} | {r['images']} ({r['dst_mb']:.0f}) | {run['label'] or 'default'} | "
                  f"{run['wall_s']:.2f} s | {run['check_s']:.2f} s | "
                  f"{100 * run['check_s'] / run['wall_s']:.0f} % | {run['hashed']} | {cli} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="number of images (default 3000)")
    ap.add_argument("--size", type=int, default=224, help="image side (default 224)")
    ap.add_argument("--modes", default="plain", help="comma-separated: plain, mix, rename")
    ap.add_argument("--reps", type=int, default=3, help="timed reruns per mode (default 3)")
    ap.add_argument("--cold", action="store_true",
                    help="also time the reruns with the outputs dropped from the page cache")
    ap.add_argument("--work", type=Path, default=None, help="keep the folders here (reused)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="vm-bench-resume-"))
    try:
        work.mkdir(parents=True, exist_ok=True)
        src, key_path = work / "src", work / "bench.key"
        t0 = time.perf_counter()
        make_src(src, args.n, args.size)
        print(f"source: {args.n} images ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        if not key_path.exists():
            vm.Key.generate().save(key_path)
        key = vm.Key.load(key_path)
        rows = [bench_mode(m, work, src, key, key_path, args.reps, args.cold)
                for m in args.modes.split(",")]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report(rows, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"n": args.n, "size": args.size, "modes": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
