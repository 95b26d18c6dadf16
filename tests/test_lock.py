"""One run per destination (issue 15): the manifest lock, its messages, stale locks; and the
library's errors naming parameters that the CLI turns into flags (issue 11 item 6)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from visualmixer.cli import main
from visualmixer.cli._common import flags_for
from visualmixer.core.keys import Key
from visualmixer.tools import lock as lockmod
from visualmixer.tools.errors import DestinationBusy, RunStopped
from visualmixer.tools.folders import FolderOptions, obfuscate_folder
from visualmixer.tools.lock import RunLock, lock_path_for, read_lock_info
from visualmixer.tools.safe_io import StopGuard


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture()
def folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (24, 16), (10 * i, 80, 160)).save(src / f"p{i}.png")
    key = tmp_path / "k.key"
    Key.from_seed(3).save(key)
    return src, key, tmp_path


def test_second_holder_is_refused_naming_the_first(tmp_path):
    man = tmp_path / "m.jsonl"
    with RunLock(man, command="obfuscate", target="/data/out") as first:
        info = read_lock_info(first.path)
        assert info["pid"] == os.getpid() and info["command"] == "obfuscate"
        with pytest.raises(DestinationBusy) as exc:
            RunLock(man, command="restore").acquire()
        msg = str(exc.value)
        assert f"PID {os.getpid()}" in msg and info["started"] in msg and "\n" not in msg
        assert exc.value.exit_code == 4 and exc.value.pid == os.getpid()
    assert read_lock_info(lock_path_for(man))["released"] is True
    with RunLock(man, command="restore") as again:  # released: free again, not stale
        assert again.stale == {}


def test_one_destination_two_manifests_is_refused_too(folder, capsys):
    src, key, tmp = folder
    dst = tmp / "dst"
    with RunLock.for_destination(dst.resolve(), command="obfuscate"):
        rc = main(["obfuscate", str(src), str(dst), "--key", str(key), "-q", "--manifest",
                   str(tmp / "other.jsonl")])
        err = capsys.readouterr().err
    assert rc == 4 and f"holds the destination {dst.resolve()}" in err and f"PID {os.getpid()}" in err
    assert not dst.exists()


def test_stale_lock_of_a_dead_process_is_taken_and_reported(folder):
    src, key, tmp = folder
    man = tmp / "m.jsonl"
    dead = _dead_pid()
    lock_path_for(man).write_text(json.dumps({"pid": dead, "started": "2026-01-01T00:00:00Z",
                                              "command": "obfuscate"}))
    warnings = []
    summary = obfuscate_folder(src, tmp / "dst", Key.load(key), manifest=man, progress=False,
                               warn=warnings.append)
    assert summary.done == 3
    assert any(f"PID {dead}" in w and "ended without finishing" in w for w in warnings), warnings


def test_lock_held_by_orphans_of_a_dead_driver(tmp_path):
    man = tmp_path / "m.jsonl"
    path = lock_path_for(man)
    holder = RunLock(man, command="obfuscate").acquire()  # stands for the orphaned workers
    dead = _dead_pid()
    path.write_text(json.dumps({"pid": dead, "started": "2026-01-01T00:00:00Z", "command": "obfuscate"}))
    try:
        with pytest.raises(DestinationBusy, match=f"driver \\(PID {dead}.*has ended"):
            RunLock(man, command="obfuscate", wait_dead=0.2).acquire()
    finally:
        holder.release()


def test_lock_falls_back_to_the_temp_folder_when_the_manifest_folder_is_read_only(tmp_path, monkeypatch):
    man = tmp_path / "ro" / "m.jsonl"
    real_open = os.open

    def fake_open(path, *a, **k):
        if str(path) == str(lock_path_for(man)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", fake_open)
    with RunLock(man, command="restore") as lk:
        assert lk.path.parent.name.startswith("visualmixer-locks-")
        with pytest.raises(DestinationBusy):
            RunLock(man, command="restore").acquire()


def test_a_planted_link_never_has_the_lock_record_written_over_its_target(folder, capsys, monkeypatch):
    """A lock file that is a symbolic link (planted in the shared temporary folder, or beside the
    manifest) is refused: following it would write the lock record over its target, a key file."""
    src, key, tmp = folder
    monkeypatch.setattr(lockmod.tempfile, "gettempdir", lambda: str(tmp / "tmp"))
    (tmp / "tmp").mkdir()
    before = key.read_bytes()
    dst = (tmp / "dst").resolve()
    lockmod.destination_lock_path(dst).symlink_to(key)
    rc = main(["obfuscate", str(src), str(dst), "--key", str(key), "-q", "--manifest", str(tmp / "m.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "is a symbolic link" in err and key.read_bytes() == before
    man = tmp / "m2.jsonl"
    lock_path_for(man).symlink_to(key)
    with pytest.raises(PermissionError, match="is a symbolic link"):
        RunLock(man, command="restore").acquire()
    assert key.read_bytes() == before and Key.load(key) == Key.from_seed(3)


def test_a_lock_folder_another_user_could_enter_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(lockmod.tempfile, "gettempdir", lambda: str(tmp_path))
    folder = tmp_path / f"visualmixer-locks-{os.getuid()}"
    folder.mkdir(mode=0o700)
    os.chmod(folder, 0o777)  # as made by someone else (or with a permissive umask by hand)
    with pytest.raises(PermissionError, match="is not private to this user .*mode 777.*set TMPDIR"):
        RunLock.for_destination(tmp_path / "dst", command="obfuscate").acquire()
    folder.rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    folder.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PermissionError, match="not a folder"):
        RunLock.for_destination(tmp_path / "dst", command="obfuscate").acquire()
    folder.unlink()
    with RunLock.for_destination(tmp_path / "dst", command="obfuscate") as lk:  # made afresh: private
        assert lk.path.parent == folder and (folder.stat().st_mode & 0o777) == 0o700


def test_cli_refuses_a_second_run_with_exit_4_and_writes_nothing(folder, capsys):
    src, key, tmp = folder
    man, dst = tmp / "m.jsonl", tmp / "dst"
    with RunLock(man, command="obfuscate", target=str(dst)):
        rc = main(["obfuscate", str(src), str(dst), "--key", str(key), "-q", "--manifest", str(man)])
        err = capsys.readouterr().err
        assert rc == 4 and not dst.exists() and not man.exists()
        assert len(err.strip().splitlines()) == 1 and f"PID {os.getpid()}" in err
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q", "--manifest", str(man)]) == 0
    with RunLock(man, command="obfuscate"):
        assert main(["restore", str(dst), str(tmp / "back"), "--key", str(key), "-q",
                     "--manifest", str(man)]) == 4
        assert not (tmp / "back").exists()
    assert main(["restore", str(dst), str(tmp / "back"), "--key", str(key), "-q",
                 "--manifest", str(man)]) == 0


def test_library_errors_name_parameters_and_the_cli_names_flags(folder, capsys):
    src, key, tmp = folder
    k = Key.load(key)
    with pytest.raises(ValueError, match="^workers: ") as exc:
        obfuscate_folder(src, tmp / "d", k, manifest=tmp / "m.jsonl", workers=0)
    assert "--" not in str(exc.value)
    with pytest.raises(ValueError, match="^target_vfe: "):
        FolderOptions(target_vfe=2)
    obfuscate_folder(src, tmp / "d", k, manifest=tmp / "m.jsonl", progress=False)
    with pytest.raises(ValueError, match="overwrite=True") as exc:
        obfuscate_folder(src, tmp / "d", k, manifest=tmp / "m.jsonl", batch_size=3)
    assert "--overwrite" not in str(exc.value)
    rc = main(["obfuscate", str(src), str(tmp / "d"), "--key", str(key), "-q", "--manifest",
               str(tmp / "m.jsonl"), "--batch-size", "3"])
    err = capsys.readouterr().err
    assert rc == 2 and "pass --overwrite to start over" in err and "overwrite=True" not in err


def test_flags_for():
    assert flags_for("pass overwrite=True to start over", "obfuscate") == "pass --overwrite to start over"
    assert flags_for("workers: expected an integer >= 1, got 0") == "--workers: expected an integer >= 1, got 0"
    assert flags_for("raise it with max_pixels=N if trusted") == "raise it with --max-pixels N if trusted"
    assert flags_for("format='same': JPEG") == "--format same: JPEG"
    assert flags_for("pass size=N to resize", "train") == "pass --image-size N to resize"
    assert flags_for("pass size=N to resize", "run") == "pass --size N to resize"
    assert flags_for("no key at /x/key:1 or a/overwrite=True") == "no key at /x/key:1 or a/overwrite=True"
    assert flags_for("line one\nline two") == "line one line two"


def test_stop_guard_message_is_one_line_with_space_and_resume(tmp_path):
    guard = StopGuard(tmp_path / "m.jsonl", total=10)
    guard.written, guard.bytes_written = 4, 4000
    with pytest.raises(RunStopped) as exc:
        with guard.writing(tmp_path / "x.png", 1500):
            raise OSError(errno.ENOSPC, "No space left on device")
    msg = str(exc.value)
    assert exc.value.exit_code == 3 and "\n" not in msg
    for words in ("no space left on device", "x.png", "1.5 kB needed", "about 6.0 kB for the 6",
                  "free", "nothing is lost", "rerun the same call to resume"):
        assert words in msg, (words, msg)
    with pytest.raises(ValueError):  # not an OSError: untouched
        with guard.writing(tmp_path / "x.png", 1):
            raise ValueError("x")
