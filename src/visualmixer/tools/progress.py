"""One progress bar for every long loop of the library (folder tools, training, the audit).

On a terminal it is a tqdm bar (extra ``visualmixer[tools]``); without a terminal, or without
tqdm, it prints nothing per step, so logs are not flooded. Callers pass ``enabled=False`` to
silence it entirely.

>>> for _ in progress(range(3), enabled=False, desc="x"):
...     pass
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["progress"]


class _Silent:
    """The subset of tqdm's interface the library uses, doing nothing."""

    def __init__(self, iterable: Iterable | None = None, **_: Any):
        self._iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self._iterable if self._iterable is not None else ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def write(self, s: str) -> None:
        print(s, file=sys.stderr)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable | None = None, *, enabled: bool = True, desc: str = "", total: int | None = None,
             unit: str = "it", leave: bool = False):
    """Wrap ``iterable`` (or count ``total`` by hand with ``update``) in a progress bar.

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate; omit it and call ``.update(n)`` for a manual bar.
    enabled : bool
        ``False`` returns a silent stand-in with the same interface.
    desc, total, unit, leave
        As in tqdm.

    Returns
    -------
    tqdm.tqdm or a silent stand-in
        A bar only when ``enabled``, stderr is a terminal and tqdm is installed.
    """
    if not enabled or not sys.stderr.isatty():
        return _Silent(iterable)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Silent(iterable)
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, dynamic_ncols=True)
