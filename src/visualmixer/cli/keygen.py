"""``visualmixer keygen KEYFILE``: write a new secret master key (mode 0600)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  visualmixer keygen ~/secrets/faces.key
      32 random bytes from the OS CSPRNG, written with mode 0600 (a missing folder is created
      with mode 0700). The key is never printed.
      Keep it (and a backup) private: without it nothing can be restored; with it, anyone holding
      an obfuscated dataset and its manifest can restore the originals.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "keygen",
        help="write a new secret master key file",
        description="Write a new secret master key (32 bytes from the OS CSPRNG) to KEYFILE with "
        "mode 0600, creating a missing folder with mode 0700. Refuses to overwrite an existing file.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("keyfile", metavar="KEYFILE", help="path of the new key file (must not exist)")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    p.set_defaults(func=run)
    return p


def _make_private_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents with mode 0700; return the ones created."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for made in reversed(missing):
        try:
            made.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise PermissionError(f"KEYFILE: cannot create folder {made}: {exc.strerror or exc}") from None
        os.chmod(made, 0o700)  # mkdir's mode is subject to the umask
    return missing[::-1]


def run(args: argparse.Namespace) -> int:
    from visualmixer.core.keys import Key

    target = Path(args.keyfile)
    if target.exists():
        raise FileExistsError(f"KEYFILE: {target} already exists; keygen never replaces a key "
                              "(move it away first if you really mean to)")
    created = _make_private_folders(target.parent)
    if created and not args.quiet:
        print(f"created folder {created[-1]} (mode 0700)", file=sys.stderr)
    key = Key.generate()
    try:
        path = key.save(target, overwrite=False)
    except FileExistsError:
        raise FileExistsError(f"KEYFILE: {target} already exists") from None
    except OSError as exc:
        raise PermissionError(f"KEYFILE: {exc}") from None
    if not args.quiet:
        print(f"wrote a new key to {path} (mode 0600, fingerprint {key.fingerprint}); keep it "
              "private and backed up", file=sys.stderr)
    return 0
