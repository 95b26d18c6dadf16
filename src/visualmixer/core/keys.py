"""Master keys and per-image subkeys.

A master key is 32 bytes from the operating system's CSPRNG. Every image gets its own subkey
``HMAC-SHA256(master, encode(image_id) || purpose)``; the permutations of that image are expanded
from the subkey by a counter-based generator (:mod:`visualmixer.core.keyed`). Nothing here touches a
global random state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from visualmixer.core.atomic import replace_atomically

__all__ = ["Key", "ImageId", "encode_image_id", "check_key", "KEY_BYTES", "is_key_file"]

KEY_BYTES = 32
_FILE_HEADER = "visualmixer-key-v1"

#: An image id: an int, a str, or a tuple of them (e.g. ``(index, epoch)`` for online re-keying).
ImageId = int | str | tuple


def encode_image_id(image_id: ImageId) -> bytes:
    """Encode an image id unambiguously (type tag + length prefix), so ``1``, ``"1"`` and ``(1,)``
    never share a subkey.

    Examples
    --------
    >>> encode_image_id(3) != encode_image_id("3")
    True
    """
    if isinstance(image_id, bool):
        raise TypeError("image ids must be int, str or tuple of them, not bool")
    if isinstance(image_id, int):
        body = str(image_id).encode("ascii")
        tag = b"i"
    elif isinstance(image_id, str):
        body = image_id.encode("utf-8")
        tag = b"s"
    elif isinstance(image_id, tuple):
        body = b"".join(encode_image_id(part) for part in image_id)
        tag = b"t"
    else:
        raise TypeError(
            f"image ids must be int, str or tuple of them, got {type(image_id).__name__}"
        )
    return tag + len(body).to_bytes(8, "big") + body


class Key:
    """A secret master key of 32 bytes.

    Create one with :meth:`generate` (OS CSPRNG) and keep it with :meth:`save` (mode 0600).
    The key's bytes never appear in ``repr``/``str``; :attr:`fingerprint` identifies a key
    without revealing it.

    Examples
    --------
    >>> key = Key.generate()
    >>> len(key.subkey("cat/001.png"))
    32
    >>> "Key(" in repr(key)
    True
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes):
        if not isinstance(secret, (bytes, bytearray)):
            raise TypeError(f"key material must be bytes, got {type(secret).__name__}")
        if len(secret) != KEY_BYTES:
            raise ValueError(f"a key must be exactly {KEY_BYTES} bytes, got {len(secret)}")
        self._secret = bytes(secret)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def generate(cls) -> Key:
        """A new key from the operating system's CSPRNG (:func:`secrets.token_bytes`)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_seed(cls, seed: int) -> Key:
        """A key derived from a small integer. NOT SECRET: for experiments and tests only."""
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        return cls(hashlib.sha256(b"visualmixer-insecure-seed:" + str(seed).encode()).digest())

    # -- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the key to ``path`` with mode 0600 (created that way, never world-readable).

        Raises ``FileExistsError`` when the file exists and ``overwrite`` is false, and
        ``FileNotFoundError`` when its folder does not exist (create it first, mode 0700).
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"key file {path} already exists (pass overwrite=True to replace)")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"folder {path.parent} of key file {path.name} does not exist")
        text = f"{_FILE_HEADER}\n{base64.b64encode(self._secret).decode('ascii')}\n"
        try:  # (without overwrite: never over a file made since the check above, by a second keygen)
            return replace_atomically(path, text.encode("ascii"), mode=0o600, suffix=".tmp", exact_mode=True,
                                      overwrite=overwrite)
        except FileExistsError:
            raise FileExistsError(f"key file {path} already exists (pass overwrite=True to replace)") from None
        except OSError as exc:  # the message names the key file, never the temporary beside it
            raise type(exc)(f"cannot write key file {path}: {exc.strerror or exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Key:
        """Read a key written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            No such file.
        PermissionError
            The file is readable by group or others (fix with ``chmod 600 PATH``).
        ValueError
            The file is not a VisualMixer key or holds the wrong number of bytes.
        """
        path = Path(path)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PermissionError(
                f"key file {path} is accessible by group/others (mode {stat.S_IMODE(mode):o}); "
                f"run: chmod 600 {path}"
            )
        try:
            text = path.read_text("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a visualmixer key file (not ASCII text)") from None
        lines = text.split()
        if len(lines) != 2 or lines[0] != _FILE_HEADER:
            raise ValueError(
                f"{path} is not a visualmixer key file (expected a '{_FILE_HEADER}' header line "
                "and one base64 line; make one with `visualmixer keygen`)"
            )
        try:
            secret = base64.b64decode(lines[1], validate=True)
        except ValueError:
            raise ValueError(f"{path}: the key line is not valid base64") from None
        if len(secret) != KEY_BYTES:
            raise ValueError(f"{path}: a key must hold {KEY_BYTES} bytes, this one holds {len(secret)}")
        return cls(secret)

    # -- derivation ---------------------------------------------------------------------------
    def subkey(self, image_id: ImageId, purpose: str = "shuffle") -> bytes:
        """``HMAC-SHA256(master, encode(image_id) || purpose)``: 32 bytes for one image."""
        msg = encode_image_id(image_id) + b"|" + purpose.encode("utf-8")
        return hmac.new(self._secret, msg, hashlib.sha256).digest()

    def subkeys(self, ids: Sequence[ImageId], purpose: str = "shuffle") -> list[bytes]:
        """:meth:`subkey` for each id."""
        return [self.subkey(i, purpose) for i in ids]

    @property
    def fingerprint(self) -> str:
        """A short public identifier of the key (16 hex digits); reveals nothing usable."""
        return hmac.new(self._secret, b"fingerprint", hashlib.sha256).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and hmac.compare_digest(self._secret, other._secret)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"Key(fingerprint={self.fingerprint})"

    __str__ = __repr__

    def __reduce__(self):  # a pickle holds the key's bytes (how DataLoader and Dask workers get it):
        return (Key, (self._secret,))  # never pickle a Key into a file or onto a network you do not trust


def check_key(key, name: str = "key") -> Key:
    """``key`` if it is a :class:`Key`, else ``TypeError`` naming ``name``."""
    if not isinstance(key, Key):
        raise TypeError(f"{name} must be a visualmixer.Key (e.g. Key.generate() or Key.load(path)), "
                        f"got {type(key).__name__}")
    return key


def is_key_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an existing file that starts as a key file does (its header line):
    for the tools that write files, so that a misdirected path never replaces a key."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(_FILE_HEADER) + 1) == f"{_FILE_HEADER}\n".encode()
    except OSError:
        return False
