"""The ``visualmixer`` command line: one small module per command, parsing and printing only.

Each command module defines ``add_parser(subparsers)`` (which registers the sub-command and sets
``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command names (module names under visualmixer.cli with "_" for "-"), in the order `--help` lists them.
COMMANDS = [
    "run",
    "keygen",
    "obfuscate",
    "restore",
    "vfe",
    "show",
    "train",
    "soft-labels",
    "audit",
    "recommend",
    "fl",
    "distill",
]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``visualmixer`` parser; with ``only``, just that sub-command (so one command's
    imports never depend on another's)."""
    parser = argparse.ArgumentParser(
        prog="visualmixer",
        description="Obfuscate images by VFE-targeted, keyed pixel shuffling; restore them with the key.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [only] if only in COMMANDS else COMMANDS:
        try:
            module = importlib.import_module(f"visualmixer.cli.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:  # a command not built yet, or an extra not installed
            if exc.name == f"visualmixer.cli.{name.replace('-', '_')}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=words[0] if words else None)
    args = parser.parse_args(words)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return _run_mapped(args, argv)


def _run_mapped(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run a command; every error becomes one line on stderr with the library's parameter names
    written as this command's flags (exit codes: docs/tools.md)."""
    from visualmixer.cli._common import flags_for, resume_command
    from visualmixer.core.optional import MissingExtraError
    from visualmixer.tools.errors import RunStopped, ToolError, describe_oserror

    prefix = f"visualmixer {args.command}"
    resumable = args.command in ("obfuscate", "restore")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        tail = ("; nothing is lost: finished images are recorded, resume with: "
                + resume_command(argv)) if resumable else ""
        print(f"{prefix}: interrupted{tail}", file=sys.stderr)
        return 130
    except ToolError as exc:
        msg = flags_for(str(exc), args.command)
        if isinstance(exc, RunStopped):
            msg = msg.replace("rerun the same call to resume", "resume with: " + resume_command(argv))
        print(f"{prefix}: error: {msg}", file=sys.stderr)
        return exc.exit_code
    except MissingExtraError as exc:
        print(f"{prefix}: error: {flags_for(str(exc), args.command)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError) as exc:
        print(f"{prefix}: error: {flags_for(str(exc), args.command)}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{prefix}: error: {describe_oserror(exc)}{where}", file=sys.stderr)
        return 3

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
