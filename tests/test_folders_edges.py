"""Folder runs at their edges: colliding output names, another key's outputs in DST, links from
DST into SRC, files that are not regular files, damaged outputs on resume, SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visualmixer.cli import main
from visualmixer.tools import imageio as vio
from visualmixer.tools.manifest import Manifest

try:
    from _vm_files import smooth_rgb
except ImportError:  # tests/ as a package
    from ._vm_files import smooth_rgb


def _save(path: Path, seed: int, fmt: str = "PNG", size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_rgb(size, size, seed)).save(path, format=fmt)


@pytest.fixture()
def keys(tmp_path):
    paths = []
    for name in ("a.key", "b.key"):
        path = tmp_path / "secret" / name
        path.parent.mkdir(exist_ok=True)
        assert main(["keygen", str(path), "-q"]) == 0
        paths.append(path)
    return paths


def _pixels(path: Path) -> np.ndarray:
    return vio.read_image(path).numpy()


@pytest.mark.parametrize("rename", [False, True])
def test_colliding_output_names_keep_every_image(tmp_path, keys, capsys, rename):
    src, dst, back = tmp_path / "src", tmp_path / "dst", tmp_path / "back"
    for seed, name in enumerate(["a.jpg", "a.png", "a.jpg.png"]):
        _save(src / name, seed, "JPEG" if name.endswith(".jpg") else "PNG")
    extra = ["--rename"] if rename else []
    assert main(["obfuscate", str(src), str(dst), "--key", str(keys[0]), "-q", *extra]) == 0
    man = Manifest.read(next(keys[0].parent.glob("a.key.dst-*.manifest.jsonl")))
    outs = sorted(r["out"] for r in man.done())
    assert len(set(outs)) == 3 and sorted(p.name for p in dst.iterdir()) == outs
    if not rename:
        assert outs == ["a.jpg-2.png", "a.jpg.png", "a.png"]
    # a rerun finds all three done (the names are decided again the same way)
    assert main(["obfuscate", str(src), str(dst), "--key", str(keys[0]), *extra]) == 0
    assert "already done 3" in capsys.readouterr().out
    assert main(["restore", str(dst), str(back), "--key", str(keys[0]), "-q"]) == 0
    restored = sorted(back.iterdir())
    assert len(restored) == 3
    wanted = {name: _pixels(src / name) for name in ["a.jpg", "a.png", "a.jpg.png"]}
    got = {p.name: _pixels(p) for p in restored}
    assert np.array_equal(got["a.png"], wanted["a.png"])
    assert np.array_equal(got["a.jpg.png"], wanted["a.jpg.png"])
    assert np.array_equal(got["a.jpg-2.png"], wanted["a.jpg"])


def _tree(root: Path, n: int, classes: int = 2, size: int = 16) -> None:
    for i in range(n):
        _save(root / f"c{i % classes}" / f"img{i:02d}.png", i, size=size)


@pytest.mark.parametrize("how", ["failed_first", "added_later"])
def test_a_later_restore_never_keeps_another_images_file_under_a_name(tmp_path, keys, capsys, how):
    """``a.jpg`` and ``a.png`` both want ``a.png``. A restore made while ``a.png`` had failed
    (or was not there yet) must not leave ``a.jpg``'s pixels as ``a.png`` once it is done."""
    src, dst, back = tmp_path / "src", tmp_path / "dst", tmp_path / "back"
    _save(src / "a.jpg", 0, "JPEG")
    if how == "failed_first":
        (src / "a.png").write_bytes(b"")
    run = ["--key", str(keys[0]), "-q"]
    main(["obfuscate", str(src), str(dst), *run])
    main(["restore", str(dst), str(back), *run])
    _save(src / "a.png", 1)
    assert main(["obfuscate", str(src), str(dst), *run]) == 0
    assert main(["restore", str(dst), str(back), *run]) == 0
    assert (_pixels(back / "a.png") == _pixels(src / "a.png")).all()
    assert (_pixels(back / "a.jpg.png") == _pixels(src / "a.jpg")).all()


def test_an_image_that_left_src_keeps_its_output_name(tmp_path, keys, capsys):
    """Without ``a.png`` in SRC, ``a.jpg`` would want ``a.png``: the name of ``a.png``'s output,
    which must stay restorable."""
    src, dst, back = tmp_path / "src", tmp_path / "dst", tmp_path / "back"
    _save(src / "a.jpg", 0, "JPEG")
    _save(src / "a.png", 1)
    run = ["--key", str(keys[0]), "-q"]
    assert main(["obfuscate", str(src), str(dst), *run]) == 0
    before = {p.name: p.read_bytes() for p in dst.iterdir()}
    kept = _pixels(src / "a.png")
    (src / "a.png").rename(tmp_path / "a.png.moved")
    assert main(["obfuscate", str(src), str(dst), *run]) == 0
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == before
    assert main(["restore", str(dst), str(back), *run]) == 0
    assert (_pixels(back / "a.png") == kept).all()


def test_an_image_added_later_never_takes_a_recorded_output_name(tmp_path, keys):
    """``a.bmp`` written as ``a.png`` and then gone from SRC, ``a.png`` added: the new image gets
    another name (``a-2.png``), and ``a.bmp``'s output, all that is left of it, stays restorable."""
    src, dst, back = tmp_path / "src", tmp_path / "dst", tmp_path / "back"
    _save(src / "a.bmp", 0, "BMP")
    run = ["--key", str(keys[0]), "-q"]
    assert main(["obfuscate", str(src), str(dst), *run]) == 0
    before = (dst / "a.png").read_bytes()
    kept = _pixels(src / "a.bmp")
    (src / "a.bmp").unlink()
    _save(src / "a.png", 1)
    assert main(["obfuscate", str(src), str(dst), *run]) == 0
    assert (dst / "a.png").read_bytes() == before and (dst / "a-2.png").exists()
    assert main(["restore", str(dst), str(back), *run]) == 0
    assert (_pixels(back / "a.bmp.png") == kept).all() and (_pixels(back / "a.png") == _pixels(src / "a.png")).all()


@pytest.mark.parametrize("mix", [[], ["--mix", "2"]])
def test_a_rerun_restore_renews_images_obfuscated_again(tmp_path, keys, mix):
    """A source replaced after a restore and obfuscated again: restoring into the same RESTORED
    gives the new pixels (the old restored file is older than its new output, and fails the
    image's keyed check), while untouched restored files are taken as done."""
    src, dst, back = tmp_path / "src", tmp_path / "dst", tmp_path / "back"
    for c in ("a", "b"):
        for i in range(2):
            _save(src / c / f"{i}.png", 10 * ord(c) + i)
    run = ["--key", str(keys[0]), "-q"]
    assert main(["obfuscate", str(src), str(dst), *run, *mix]) == 0
    assert main(["restore", str(dst), str(back), *run]) == 0
    _save(src / "a" / "1.png", 99)
    assert main(["obfuscate", str(src), str(dst), *run, *mix]) == 0
    assert main(["restore", str(dst), str(back), *run]) == 0
    for c in ("a", "b"):
        for i in range(2):
            assert (_pixels(back / c / f"{i}.png") == _pixels(src / c / f"{i}.png")).all(), (c, i)


@pytest.mark.parametrize("mix", [None, "2"])
def test_resume_redoes_a_damaged_output(tmp_path, keys, capsys, mix):
    src, dst, ref = tmp_path / "src", tmp_path / "dst", tmp_path / "ref"
    _tree(src, 4)
    extra = ["--mix", mix] if mix else []
    for out in (ref, dst):
        assert main(["obfuscate", str(src), str(out), "--key", str(keys[0]), "-q", *extra]) == 0
    truncated, flipped = dst / "c0/img00.png", dst / "c1/img01.png"
    with open(truncated, "r+b") as fh:
        fh.truncate(100)
    data = bytearray(flipped.read_bytes())
    data[-20] ^= 1  # same size, other bytes
    flipped.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["obfuscate", str(src), str(dst), "--key", str(keys[0]), *extra]) == 0
    out, err = capsys.readouterr()
    assert "differ from what the manifest records" in err
    assert ("obfuscated 4" if mix else "obfuscated 2, already done 2") in out, out
    assert {p: p.read_bytes() for p in sorted(ref.rglob("*.png"))} == {
        ref / p.relative_to(dst): p.read_bytes() for p in sorted(dst.rglob("*.png"))}


def _interrupt_after_first_chunk(monkeypatch):
    from visualmixer.tools import folders

    real, calls = folders._record_results, []

    def stop_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(folders, "_record_results", stop_after_one)


@pytest.mark.parametrize("how", [[], ["--mix", "2"], ["--rename"]])  # renamed: the keys' names differ
def test_another_key_into_a_half_filled_dst_is_refused(tmp_path, keys, capsys, monkeypatch, how):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, 8)
    extra = ["--batch-size", "4", *how]
    _interrupt_after_first_chunk(monkeypatch)
    assert main(["obfuscate", str(src), str(dst), "--key", str(keys[0]), "-q", *extra]) == 130
    monkeypatch.undo()
    before = {p: p.read_bytes() for p in dst.rglob("*.png")}
    assert len(before) == 4  # the first chunk's outputs
    capsys.readouterr()
    assert main(["obfuscate", str(src), str(dst), "--key", str(keys[1]), "-q", *extra]) == 2
    err = capsys.readouterr().err
    assert "already holds 4 image file(s) that this run's manifest does not record" in err
    assert "another key" in err and "choose another DST" in err and "--overwrite" in err, err
    assert {p: p.read_bytes() for p in dst.rglob("*.png")} == before
    assert not list(keys[1].parent.glob("b.key.*.manifest.jsonl"))  # a refused run leaves none
    # the half-finished run's restore says it is not whole, and exits 1
    assert main(["restore", str(dst), str(tmp_path / "back"), "--key", str(keys[0]), "-q"]) == 1
    out, err = capsys.readouterr()
    assert "restored 4" in out and "never obfuscated 4" in out
    assert "not every image of the run was restored: 4 image(s) are not in RESTORED" in err
    # the key that made it resumes it; then everything restores, exit 0
    assert main(["obfuscate", str(src), str(dst), "--key", str(keys[0]), "-q", *extra]) == 0
    assert main(["restore", str(dst), str(tmp_path / "back"), "--key", str(keys[0]), "-q"]) == 0


def test_restore_of_a_run_with_failed_images_exits_1(tmp_path, keys, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, 2)
    (src / "c0" / "broken.png").write_bytes(b"not a png")
    assert main(["obfuscate", str(src), str(dst), "--key", str(keys[0]), "-q"]) == 1
    capsys.readouterr()
    assert main(["restore", str(dst), str(tmp_path / "back"), "--key", str(keys[0]), "-q"]) == 1
    out, err = capsys.readouterr()
    assert "restored 2, skipped 1" in out and "c0/broken.png: not obfuscated" in err


def test_an_output_left_by_an_image_that_later_failed_is_not_foreign(tmp_path, keys, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, 2)
    assert main(["obfuscate", str(src), str(dst), "--key", str(keys[0]), "-q"]) == 0
    (src / "c0" / "img00.png").write_bytes(b"broken now")
    for _ in range(2):  # its old output stays in DST, recorded only by a superseded record
        assert main(["obfuscate", str(src), str(dst), "--key", str(keys[0]), "-q"]) == 1
        assert "c0/img00.png: not a recognised image format" in capsys.readouterr().err


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_link_from_dst_or_restored_into_src_is_refused(tmp_path, keys, capsys, overwrite):
    src, dst, back = tmp_path / "src", tmp_path / "dst", tmp_path / "back"
    _tree(src, 4)
    before = _tree_bytes(src)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "c0").symlink_to(src / "c0")
    assert main(["obfuscate", str(src), str(tmp_path / "linked"), "--key", str(keys[0]), "-q", *overwrite]) == 2
    err = capsys.readouterr().err
    assert "linked/c0 leads into SRC" in err and "symbolic link" in err, err
    assert _tree_bytes(src) == before
    # restore: RESTORED/c0 links to the original c0; never written, never taken for restored files
    assert main(["obfuscate", str(src), str(dst), "--key", str(keys[0]), "-q"]) == 0
    back.mkdir()
    (back / "c0").symlink_to(src / "c0")
    capsys.readouterr()
    assert main(["restore", str(dst), str(back), "--key", str(keys[0]), *overwrite]) == 2
    out, err = capsys.readouterr()
    assert "back/c0 leads into the original SRC" in err and "already done" not in out, out + err
    assert _tree_bytes(src) == before


def test_every_write_checks_where_its_folder_leads(tmp_path):
    from visualmixer.tools.safe_io import StopGuard

    src = tmp_path / "src"
    (src / "c").mkdir(parents=True)
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "c").symlink_to(src / "c")  # made after the run's check, say
    guard = StopGuard(tmp_path / "m.jsonl", 1, never_inside={"SRC": src})
    for name in ("c/x.png", "c/new/x.png"):
        with pytest.raises(ValueError, match="leads into SRC"):
            guard.write_output(tmp_path / "dst" / name, b"data")
    assert list((src / "c").iterdir()) == []


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """The command line in a child process, killed after ``timeout`` seconds (a hang fails)."""
    code = "import sys; from visualmixer.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="needs POSIX")
def test_fifos_devices_and_broken_links_fail_alone_at_once(tmp_path, keys):
    src = tmp_path / "src"
    _save(src / "c" / "good.png", 1)
    os.mkfifo(src / "c" / "fifo.png")  # opening it for reading would wait for a writer
    (src / "c" / "zero.png").symlink_to("/dev/zero")  # reading it would never end
    (src / "c" / "dangling.png").symlink_to(src / "c" / "gone.png")
    res = _cli("obfuscate", str(src), str(tmp_path / "dst"), "--key", str(keys[0]), "-q")
    assert res.returncode == 1, res.stderr
    assert "c/fifo.png: not a regular file (a FIFO (named pipe))" in res.stderr
    assert "c/zero.png: not a regular file (a character device)" in res.stderr
    assert "c/dangling.png: broken symbolic link (its target" in res.stderr
    assert "vanished" not in res.stderr
    assert (tmp_path / "dst" / "c" / "good.png").is_file()
    res = _cli("vfe", str(src / "c"))  # one file at a time through imageio
    assert res.returncode == 1 and "not a regular file (a FIFO (named pipe))" in res.stdout + res.stderr
    # an output replaced by a FIFO: restore names it and goes on
    (src / "c" / "fifo.png").unlink()
    (src / "c" / "zero.png").unlink()
    (src / "c" / "dangling.png").unlink()
    _save(src / "c" / "other.png", 2)
    assert _cli("obfuscate", str(src), str(tmp_path / "dst2"), "--key", str(keys[0]), "-q").returncode == 0
    (tmp_path / "dst2" / "c" / "other.png").unlink()
    os.mkfifo(tmp_path / "dst2" / "c" / "other.png")
    res = _cli("restore", str(tmp_path / "dst2"), str(tmp_path / "back"), "--key", str(keys[0]), "-q")
    assert res.returncode == 1 and "c/other.png: not a regular file (a FIFO (named pipe))" in res.stderr, res.stderr
    assert (tmp_path / "back" / "c" / "good.png").is_file()


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("command", ["obfuscate", "restore"])
def test_sigterm_stops_like_ctrl_c_and_leaves_no_temporary_file(tmp_path, keys, capsys, monkeypatch, command):
    import signal

    src, dst, ref, back = tmp_path / "src", tmp_path / "dst", tmp_path / "ref", tmp_path / "back"
    _tree(src, 12)
    common = ["--key", str(keys[0]), "-q", "--batch-size", "4"]
    assert main(["obfuscate", str(src), str(ref), *common]) == 0
    if command == "restore":
        assert main(["obfuscate", str(src), str(dst), *common]) == 0
    args = [command, str(src), str(dst), *common] if command == "obfuscate" else [
        command, str(dst), str(back), "--key", str(keys[0]), "-q"]
    out_dir = dst if command == "obfuscate" else back
    real_fsync, temps = os.fsync, []

    def fsync_then_sigterm(fd):  # SIGTERM while the 6th output's temporary file is being written
        name = os.readlink(f"/proc/self/fd/{fd}")
        if name.endswith(vio.TEMP_SUFFIX):
            temps.append(name)
            if len(temps) == 6:
                os.kill(os.getpid(), signal.SIGTERM)
        return real_fsync(fd)

    def unhandled(signum, frame):  # this test process's own: SIGTERM must not kill the test run
        raise RuntimeError("SIGTERM reached the test process: the command did not handle it")

    monkeypatch.setattr(os, "fsync", fsync_then_sigterm)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        capsys.readouterr()
        assert main(args) == 143
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the command put it back
    finally:
        signal.signal(signal.SIGTERM, previous)
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert f"visualmixer {command}: terminated (SIGTERM); nothing is lost" in err, err
    assert "resume with: visualmixer " + command in err
    assert not Path(temps[-1]).exists() and not list(out_dir.rglob("*" + vio.TEMP_SUFFIX))
    assert main(args) == 0  # resumed
    if command == "obfuscate":
        assert _tree_bytes(dst) == _tree_bytes(ref)
    else:
        assert all(np.array_equal(_pixels(back / p), _pixels(src / p)) for p in _tree_bytes(src))


def test_restore_with_the_manifest_of_another_dst_says_so(tmp_path, keys, capsys):
    src = tmp_path / "src"
    _tree(src, 4)
    one, two = tmp_path / "one", tmp_path / "two"
    _save(tmp_path / "other" / "c0" / "x.png", 9)
    for dst, source in ((one, src), (two, tmp_path / "other")):
        assert main(["obfuscate", str(source), str(dst), "--key", str(keys[0]), "-q"]) == 0
    man_two = next(keys[0].parent.glob("a.key.two-*.manifest.jsonl"))
    capsys.readouterr()
    args = ["restore", str(one), str(tmp_path / "back"), "--key", str(keys[0]), "-q", "--manifest", str(man_two)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"records a run into {two}, not DST {one}, and none of its 1 output(s) is in {one}" in err, err
    assert "pass the manifest of" in err and "--manifest PATH" in err and "missing" not in err
    # a moved release still restores, with a warning
    moved = tmp_path / "moved"
    one.rename(moved)
    man_one = next(keys[0].parent.glob("a.key.one-*.manifest.jsonl"))
    assert main(["restore", str(moved), str(tmp_path / "back"), "--key", str(keys[0]), "-q",
                 "--manifest", str(man_one)]) == 0
    assert f"records a run into {one}, not {moved}: restoring from {moved}" in capsys.readouterr().err


def test_a_linked_folder_in_src_is_named_not_silently_left_out(tmp_path, keys, capsys):
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere" / "dogs"
    _save(src / "cats" / "1.png", 0)
    _save(elsewhere / "2.png", 1)
    (src / "dogs").symlink_to(elsewhere)
    assert main(["obfuscate", str(src), str(tmp_path / "dst"), "--key", str(keys[0]), "-q"]) == 0
    err = capsys.readouterr().err
    assert "1 linked folder(s) in SRC not followed, their images left out: dogs" in err, err
    assert not (tmp_path / "dst" / "dogs").exists()


def test_only_names_two_images_could_want_are_checked_on_a_restore_rerun():
    """A restored file is verified (decoded, keyed check) only where another image could have had
    its name: not for every upper-case .PNG."""
    from visualmixer.tools.layout import output_names
    from visualmixer.tools.restoring import _contested

    assert _contested(output_names(["a.PNG", "b.png", "c.jpg", "d/e.Png"], fmt="png")) == set()
    assert _contested(output_names(["a.jpg", "a.png", "x/b.JPG", "x/b.PNG"], fmt="png")) == {
        "a.jpg", "a.png", "x/b.JPG", "x/b.PNG"}
