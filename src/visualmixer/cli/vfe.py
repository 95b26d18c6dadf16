"""``visualmixer vfe PATH...``: visual feature entropy of image files, per image and in summary."""

from __future__ import annotations

import argparse
import sys

from visualmixer.cli._common import positive_int

EXAMPLES = """\
examples:
  visualmixer vfe photo.jpg
  visualmixer vfe photos/ shared/photos-vm            folders are searched recursively
  visualmixer vfe shared/photos-vm --json > vfe.json  one object per image plus a summary
  visualmixer vfe shared/photos-vm --csv > vfe.csv    columns: path,height,width,channels,vfe

  VFE is 0 for a flat image, about 0.13-0.25 for natural photos and 1.0 for noise (SPEC section 3).
  Unreadable files are listed with their reason; the exit status is then 1.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "vfe",
        help="visual feature entropy of image files",
        description="Compute the visual feature entropy (VFE) of each image (files, or folders "
        "searched recursively) and print a table and a summary (count, mean, median, min, max).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON instead of a table")
    out.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("--window", type=positive_int, default=None, metavar="S",
                   help="VFE window side in pixels (default: the default region side of each "
                   "image's size; e.g. --window 16)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _collect(paths: list[str]) -> list[str]:
    from pathlib import Path

    from visualmixer.tools.folders import list_images

    files: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            ids, _ignored = list_images(path)
            files += [str(path / i) for i in ids]
        elif path.exists():
            files.append(str(path))
        else:
            raise FileNotFoundError(f"PATH: {raw} does not exist")
    return files


def run(args: argparse.Namespace) -> int:
    import csv
    import json
    import statistics

    import torch
    from tqdm.auto import tqdm

    from visualmixer.core.vfe import vfe
    from visualmixer.tools import imageio as vio
    files = _collect(args.paths)
    rows: list[dict] = []
    problems: list[tuple[str, str]] = []
    chunk = 32  # same-size images of a chunk share one vfe() call
    bar = tqdm(total=len(files), unit="img", desc="vfe", disable=args.quiet or len(files) < 2)
    for start in range(0, len(files), chunk):
        loaded: list[tuple[str, object]] = []
        for path in files[start:start + chunk]:
            try:
                loaded.append((path, vio.read_image(path)))
            except vio.ImageReadError as exc:
                problems.append((path, str(exc)))
        groups: dict[tuple, list[int]] = {}
        for n, (_path, px) in enumerate(loaded):
            groups.setdefault(tuple(px.shape), []).append(n)
        values_of: dict[int, float] = {}
        for members in groups.values():
            batch = torch.stack([loaded[n][1] for n in members])
            for n, value in zip(members, vfe(batch, window=args.window).tolist(), strict=True):
                values_of[n] = value
        for n, (path, px) in enumerate(loaded):
            rows.append({"path": path, "height": int(px.shape[1]), "width": int(px.shape[2]),
                         "channels": int(px.shape[0]), "vfe": round(values_of[n], 3)})
        bar.update(len(files[start:start + chunk]))
    bar.close()
    values = [r["vfe"] for r in rows]
    summary = {
        "count": len(values),
        "failed": len(problems),
        "mean": round(statistics.fmean(values), 3) if values else None,
        "median": round(statistics.median(values), 3) if values else None,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }
    if args.json:
        json.dump({"images": rows, "summary": summary,
                   "failed": [{"path": p, "reason": r} for p, r in problems]}, sys.stdout, indent=1)
        print()
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=["path", "height", "width", "channels", "vfe"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        width = max([len(r["path"]) for r in rows] + [4])
        print(f"{'path':<{width}}  {'size':>11}  {'C':>1}  {'vfe':>5}")
        for r in rows:
            size = f"{r['height']}x{r['width']}"
            print(f"{r['path']:<{width}}  {size:>11}  {r['channels']:>1}  {r['vfe']:5.3f}")
        if values:
            print(f"{summary['count']} image(s): mean {summary['mean']:.3f}, median "
                  f"{summary['median']:.3f}, min {summary['min']:.3f}, max {summary['max']:.3f}")
        else:
            print("no readable images")
    for path, reason in problems:
        print(f"  failed  {path}: {reason}", file=sys.stderr)
    return 1 if problems else 0
