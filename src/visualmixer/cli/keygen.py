"""``visualmixer keygen KEYFILE``: write a new secret master key (mode 0600)."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """\
examples:
  visualmixer keygen ~/secrets/faces.key
      32 random bytes from the OS CSPRNG, written with mode 0600. The key is never printed.
      Keep it (and a backup) private: without it nothing can be restored; with it, anyone holding
      an obfuscated dataset and its manifest can restore the originals.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "keygen",
        help="write a new secret master key file",
        description="Write a new secret master key (32 bytes from the OS CSPRNG) to KEYFILE with "
        "mode 0600. Refuses to overwrite an existing file.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("keyfile", metavar="KEYFILE", help="path of the new key file (must not exist)")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from visualmixer.core.keys import Key

    key = Key.generate()
    path = key.save(args.keyfile, overwrite=False)
    if not args.quiet:
        print(f"wrote a new key to {path} (mode 0600, fingerprint {key.fingerprint}); keep it "
              "private and backed up", file=sys.stderr)
    return 0
