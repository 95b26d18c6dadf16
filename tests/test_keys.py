import os
import pickle
import stat

import pytest

from visualmixer import Key
from visualmixer.core.keys import encode_image_id


def test_generate_is_random_and_32_bytes():
    a, b = Key.generate(), Key.generate()
    assert a != b
    assert len(a.subkey(0)) == 32


def test_repr_never_shows_bytes():
    key = Key(bytes(range(32)))
    text = repr(key) + str(key)
    assert bytes(range(32)).hex() not in text
    assert "fingerprint" in text


def test_save_load_roundtrip_mode_0600(tmp_path):
    key = Key.generate()
    path = key.save(tmp_path / "k.key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Key.load(path) == key


def test_save_refuses_overwrite(tmp_path):
    path = tmp_path / "k.key"
    Key.generate().save(path)
    with pytest.raises(FileExistsError, match="overwrite"):
        Key.generate().save(path)
    other = Key.generate()
    other.save(path, overwrite=True)
    assert Key.load(path) == other


def test_save_never_replaces_a_key_written_meanwhile(tmp_path, monkeypatch):
    """Without overwrite, a key file that appears between the check and the write (a second
    ``keygen`` to the same path) is kept: replacing it would lose what that key protects."""
    path = tmp_path / "k.key"
    first, second = Key.generate(), Key.generate()
    real_fsync = os.fsync

    def racing_fsync(fd):
        real_fsync(fd)
        if not path.exists():  # the other keygen finishes first
            path.write_bytes(first_bytes)
            os.chmod(path, 0o600)

    first.save(tmp_path / "first.key")
    first_bytes = (tmp_path / "first.key").read_bytes()
    monkeypatch.setattr(os, "fsync", racing_fsync)
    with pytest.raises(FileExistsError, match="already exists"):
        second.save(path)
    monkeypatch.undo()
    assert Key.load(path) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.key", "k.key"]  # no temporary left
    second.save(path, overwrite=True)
    assert Key.load(path) == second and stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_load_rejects_world_readable(tmp_path):
    path = Key.generate().save(tmp_path / "k.key")
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        Key.load(path)


@pytest.mark.parametrize(
    "content, match",
    [
        ("hello\n", "not a visualmixer key"),
        ("visualmixer-key-v1\n!!!notbase64\n", "base64"),
        ("visualmixer-key-v1\nAAAA\n", "32 bytes"),
    ],
)
def test_load_rejects_bad_format(tmp_path, content, match):
    path = tmp_path / "bad.key"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(ValueError, match=match):
        Key.load(path)


def test_load_rejects_binary(tmp_path):
    path = tmp_path / "bin.key"
    path.write_bytes(os.urandom(64) + b"\xff")
    os.chmod(path, 0o600)
    with pytest.raises(ValueError, match="not a visualmixer key file"):
        Key.load(path)


def test_wrong_key_length():
    with pytest.raises(ValueError, match="32 bytes"):
        Key(b"short")
    with pytest.raises(TypeError, match="key material must be bytes"):
        Key("a string")


def test_subkeys_depend_on_id_purpose_and_key():
    key = Key.generate()
    assert key.subkey(1) == key.subkey(1)
    assert key.subkey(1) != key.subkey("1")
    assert key.subkey(1) != key.subkey((1,))
    assert key.subkey((1, 2)) != key.subkey((12,))
    assert key.subkey(1, "shuffle") != key.subkey(1, "other")
    assert Key.generate().subkey(1) != key.subkey(1)


def test_id_encoding_rejects_other_types():
    with pytest.raises(TypeError, match="image ids must be int, str or tuple of them, got float"):
        encode_image_id(1.5)
    with pytest.raises(TypeError, match="image ids must be int, str or tuple of them, not bool"):
        encode_image_id(True)


def test_pickle_roundtrip():
    key = Key.generate()
    assert pickle.loads(pickle.dumps(key)) == key
