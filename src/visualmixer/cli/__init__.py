"""The ``visualmixer`` command line: one small module per command, parsing and printing only.

Each command module defines ``add_parser(subparsers)`` (which registers the sub-command and sets
``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading

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


class Terminated(KeyboardInterrupt):
    """SIGTERM during a folder command: raised in the main thread, so the run stops as on Ctrl-C
    (temporary files removed, finished images recorded, one line, exit 143)."""


@contextlib.contextmanager
def _sigterm_stops_gracefully(enabled: bool):
    """While enabled (and in the main thread), SIGTERM raises :class:`Terminated`; a second
    SIGTERM during the stop ends the process at once, as SIGTERM does by default."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_mapped(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run a command; every error becomes one line on stderr with the library's parameter names
    written as this command's flags (exit codes: docs/tools.md)."""
    from visualmixer.cli._common import flags_for, resume_command
    from visualmixer.core.optional import MissingExtraError
    from visualmixer.tools.errors import RunStopped, ToolError, describe_oserror

    prefix = f"visualmixer {args.command}"
    resumable = args.command in ("obfuscate", "restore")
    # (an obfuscate run started with --overwrite owns DST once its manifest records it: resumed
    # with --overwrite it would start over; stopped before that, nothing is lost by starting over)
    drop = ("--overwrite",) if args.command == "obfuscate" else ()
    try:
        with _sigterm_stops_gracefully(resumable):
            return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        tail = ("; nothing is lost: finished images are recorded, resume with: "
                + resume_command(argv, drop=drop if getattr(exc, "run_recorded", False) else ())
                ) if resumable else ""
        if args.command == "train":  # (a checkpoint after every epoch)
            again = resume_command(argv) + ("" if getattr(args, "resume", False) else " --resume")
            tail = f"; the finished epochs are checkpointed, continue with: {again}"
        stopped = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"{prefix}: {stopped}{tail}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except ToolError as exc:
        msg = flags_for(str(exc), args.command)
        if isinstance(exc, RunStopped):
            msg = msg.replace("rerun the same call to resume", "resume with: " + resume_command(argv, drop=drop))
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
