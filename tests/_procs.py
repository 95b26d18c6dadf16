"""Process checks shared by tests that make sure nothing outlives a run (Linux /proc)."""

from __future__ import annotations


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs: False once it is gone, a zombie or dead."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False
