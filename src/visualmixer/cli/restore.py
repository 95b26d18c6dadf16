"""``visualmixer restore DST RESTORED --key KEYFILE``: the originals' pixels back, checked."""

from __future__ import annotations

import argparse

from visualmixer.cli._common import positive_int

EXAMPLES = """\
examples:
  visualmixer restore shared/photos-vm photos-back --key secret/faces.key
      finds the manifest next to the key, writes the original pixels as PNG under photos-back/
      (same relative paths as in the original folder, NAME.png), each checked against a keyed
      checksum of the original
  visualmixer restore shared/photos-vm photos-back --key secret/faces.key \\
      --manifest secret/photos.manifest.jsonl --workers 4

  Pixels come back exactly for PNG outputs (the default). The pixels are those after the documented
  read conversions (EXIF rotation applied, alpha dropped, CMYK/16-bit/palette converted).
  Interrupted? Run the same command again: restored files are kept, the rest is done.
  RESTORED must be new, empty, or an earlier restore of the same run; a folder holding other files
  is refused (pass --overwrite to write into it anyway). Runs made with --mix are restored group
  by group, bit-exactly.

exit status: 0 every image of the run restored; 1 some not restored: failed (missing or edited
  outputs), skipped (obfuscate failed or skipped them) or never obfuscated (the obfuscate run was
  not finished), each listed or counted; 2 usage error (wrong key, no manifest), 3 stopped by a
  write error (disk full, ...; rerun to resume), 4 another run uses this manifest, 130 interrupted
  (Ctrl-C), 143 terminated (SIGTERM); after 3, 130 and 143 rerun the same command to resume.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "restore",
        help="restore the original pixels of an obfuscated folder",
        description="Restore the original pixels of every image of an obfuscated folder DST into "
        "RESTORED, using the key and the private manifest written by `visualmixer obfuscate`.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dst", metavar="DST", help="the obfuscated folder")
    p.add_argument("restored", metavar="RESTORED", help="output folder (must not be inside DST)")
    p.add_argument("--key", required=True, metavar="KEYFILE", help="the key used to obfuscate")
    p.add_argument("--manifest", metavar="PATH", default=None,
                   help="the manifest of that run (default: found next to the key)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a RESTORED folder that holds other files, replacing files of "
                   "the same name (default: refuse such a folder; skip files restored by an earlier "
                   "run, so a rerun resumes)")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="worker processes (default 1)")
    p.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="'local' or tcp://HOST:PORT, as for obfuscate")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar; print only failures")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from visualmixer.cli._common import folder_run_options, load_key, print_summary
    from visualmixer.tools.folders import restore_folder

    key = load_key(args.key)
    summary = restore_folder(args.dst, args.restored, key, **folder_run_options(args))
    print_summary("restored", summary, quiet=args.quiet)
    return summary.exit_code
