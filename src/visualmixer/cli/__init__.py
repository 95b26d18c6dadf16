"""The ``visualmixer`` command line: one small module per command, parsing and printing only.

Each command module defines ``add_parser(subparsers)`` (which registers the sub-command and sets
``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Module names under visualmixer.cli, in the order `--help` lists them.
COMMANDS = [
    "run",
    "keygen",
    "obfuscate",
    "restore",
    "vfe",
    "show",
    "train",
    "audit",
    "fl",
    "distill",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visualmixer",
        description="Obfuscate images by VFE-targeted, keyed pixel shuffling; restore them with the key.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"visualmixer.cli.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet, or an extra not installed
            if exc.name == f"visualmixer.cli.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError) as exc:
        print(f"visualmixer {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
