"""Process-wide on/off settings of the core, each read once from an environment variable."""

from __future__ import annotations

import os

__all__ = ["Switch"]

_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class Switch:
    """An on/off setting: environment variable ``env`` (``1/true/yes/on`` or ``0/false/no/off``;
    unset or anything else: ``default``) at import, then :meth:`set`.

    Examples
    --------
    >>> s = Switch("VISUALMIXER_EXAMPLE_SWITCH", default=False)
    >>> s.on, s.set(True), s.on
    (False, False, True)
    """

    def __init__(self, env: str, *, default: bool):
        text = os.environ.get(env, "").strip()
        self.on = True if text in _ON else False if text in _OFF else default

    def set(self, enabled: bool) -> bool:
        """Switch on or off; returns the previous setting."""
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
        previous, self.on = self.on, enabled
        return previous
