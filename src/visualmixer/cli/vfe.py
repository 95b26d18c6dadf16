"""``visualmixer vfe PATH...``: visual feature entropy of image files, per image and in summary."""

from __future__ import annotations

import argparse
import sys

from visualmixer.cli._common import flags_for, positive_int

EXAMPLES = """\
examples:
  visualmixer vfe photo.jpg
  visualmixer vfe photos/ shared/photos-vm            folders are searched recursively
  visualmixer vfe shared/photos-vm --json > vfe.json  one object per image plus a summary
  visualmixer vfe shared/photos-vm --csv > vfe.csv    columns: path,height,width,channels,vfe
  visualmixer vfe scan.tif --max-pixels 200000000     a trusted image above the default limit

  The table prints each size as width×height (as PIL and ImageMagick do).

  VFE is 0 for a flat image and about 1 for noise; the photos that ship with scikit-image,
  scikit-learn and matplotlib score 0.11-0.41 at full size (median 0.21; README, docs/method.md).
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
    p.add_argument("--max-pixels", type=positive_int, default=None, metavar="N",
                   help="refuse images whose declared width x height exceeds N pixels (the "
                   "decompression-bomb guard; default: Pillow's, about 89.5 million); raise it "
                   "for trusted large files")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import csv
    import json

    from visualmixer.tools.scoring import image_files, score_files

    try:
        files = image_files(args.paths)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"PATH: {exc}") from None
    result = score_files(files, window=args.window, max_pixels=args.max_pixels,
                         show_progress=not args.quiet)
    rows = [s.as_dict() for s in result.scores]
    problems = [(path, flags_for(reason, "vfe")) for path, reason in result.failed]
    summary = result.summary()
    if args.json:
        json.dump({"images": rows, "summary": summary,
                   "failed": [{"path": p, "reason": r} for p, r in problems]}, sys.stdout, indent=1)
        print()
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=["path", "height", "width", "channels", "vfe"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        _print_table(result)
    for path, reason in problems:
        print(f"  failed  {path}: {reason}", file=sys.stderr)
    return 1 if problems else 0


def _print_table(result) -> None:
    width = max([len(s.path) for s in result.scores] + [4])
    print(f"{'path':<{width}}  {'size (W×H)':>11}  {'C':>1}  {'vfe':>5}")
    for s in result.scores:
        print(f"{s.path:<{width}}  {f'{s.width}×{s.height}':>11}  {s.channels:>1}  {s.vfe:5.3f}")
    summary = result.summary()
    if summary["count"]:
        print(f"{summary['count']} image(s): mean {summary['mean']:.3f}, median "
              f"{summary['median']:.3f}, min {summary['min']:.3f}, max {summary['max']:.3f}")
    else:
        print("no readable images")
