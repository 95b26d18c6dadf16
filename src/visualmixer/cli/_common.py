"""Helpers shared by the command modules (printing summaries, loading keys)."""

from __future__ import annotations

import sys

MAX_PROBLEM_LINES = 50


def load_key(path):
    """Load a key file; errors name the ``--key`` option."""
    from visualmixer.core.keys import Key

    try:
        return Key.load(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"--key: no key file at {path} (make one with `visualmixer keygen`)") from None
    except PermissionError as exc:
        raise PermissionError(f"--key: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"--key: {exc}") from None


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _unit_interval(text: str, what: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{what} must be in [0, 1], got {value}")
    return value


def unit_float(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    return _unit_interval(text, "the value")


def target_or_none(text: str) -> float | None:
    """argparse type: a target VFE in [0, 1], or ``none``/``clean`` for the clean baseline."""
    if text.lower() in ("none", "clean"):
        return None
    return _unit_interval(text, "target VFE (or 'none')")


def print_summary(verb: str, summary, *, quiet: bool = False) -> None:
    """Print the one-line summary to stdout and each problem (id: reason) to stderr."""
    parts = [f"{verb} {summary.done}"]
    if summary.already:
        parts.append(f"already done {summary.already}")
    parts += [f"skipped {summary.skipped}", f"failed {summary.failed}"]
    if summary.ignored:
        parts.append(f"ignored (not images) {summary.ignored}")
    rate = summary.done / summary.seconds if summary.seconds > 0 else 0.0
    line = ", ".join(parts) + f" in {summary.seconds:.1f} s ({rate:.1f} images/s)"
    if summary.manifest is not None:
        line += f"; manifest: {summary.manifest}"
    if not quiet or summary.failed:
        print(line)
    for image_id, status, reason in summary.problems[:MAX_PROBLEM_LINES]:
        print(f"  {status:7s} {image_id}: {reason}", file=sys.stderr)
    extra = len(summary.problems) - MAX_PROBLEM_LINES
    if extra > 0:
        print(f"  ... and {extra} more (every file's status is in the manifest)", file=sys.stderr)
