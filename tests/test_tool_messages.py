"""The folder tools' messages for common mistakes (issue 14, "Friction found"): each names what
went wrong and the way out, in flags on the command line and in parameters in the library."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from visualmixer.cli import main
from visualmixer.core.keys import Key
from visualmixer.tools import folders

try:
    from _vm_files import smooth_rgb
except ImportError:  # tests/ as a package
    from ._vm_files import smooth_rgb


def _images(root: Path, n: int, size: int = 16) -> None:
    for i in range(n):
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_rgb(size, size, i)).save(folder / f"img{i:03d}.png")


@pytest.fixture()
def run(tmp_path):
    src = tmp_path / "photos"
    _images(src, 12)
    key = tmp_path / "secret" / "k.key"
    key.parent.mkdir()
    assert main(["keygen", str(key), "-q"]) == 0
    dst = tmp_path / "shared" / "photos-vm"
    return src, key, dst, tmp_path


def test_restore_with_another_key_says_it_may_be_the_wrong_key(run, capsys):
    src, key, dst, tmp = run
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q"]) == 0
    other = tmp / "secret" / "other.key"
    assert main(["keygen", str(other), "-q"]) == 0
    capsys.readouterr()
    assert main(["restore", str(dst), str(tmp / "back"), "--key", str(other), "-q"]) == 2
    err = capsys.readouterr().err
    assert "no manifest for" in err and "is this the key that made the run" in err
    assert "beside the key file that made it" in err and "--manifest PATH" in err
    assert "k.key.photos-vm-" in err and "made with the key k.key?" in err  # the one beside it
    assert not (tmp / "back").exists()


def test_changed_target_vfe_names_option_values_and_way_out(run, capsys):
    src, key, dst, tmp = run
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q"]) == 0
    capsys.readouterr()
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q", "--target-vfe", "0.7"]) == 2
    err = capsys.readouterr().err
    assert "made with --target-vfe 0.5" in err and "asks for --target-vfe 0.7" in err, err
    assert "--overwrite" in err and "another DST" in err
    assert "{" not in err and "target_vfe=" not in err and len(err.strip().splitlines()) == 1
    # the library names parameters
    with pytest.raises(ValueError) as exc:
        folders.obfuscate_folder(src, dst, Key.load(key), key_path=key, progress=False,
                                 options=folders.FolderOptions(target_vfe=0.7, rename=True))
    msg = str(exc.value)
    assert "rename=False, target_vfe=0.5" in msg and "rename=True, target_vfe=0.7" in msg
    assert "overwrite=True" in msg


def test_missing_manifest_is_a_clear_message(run, capsys):
    src, key, dst, tmp = run
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q"]) == 0
    capsys.readouterr()
    assert main(["restore", str(dst), str(tmp / "back"), "--key", str(key), "-q",
                 "--manifest", str(tmp / "nowhere.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "Errno" not in err and "no manifest file at" in err and "nowhere.jsonl" in err
    assert err.startswith("visualmixer restore: error: --manifest:")


def _interrupt_after_first_chunk(monkeypatch):
    real = folders._record_results
    calls = {"n": 0}

    def stop_after_one(*args, **kwargs):
        if calls["n"] >= 1:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(folders, "_record_results", stop_after_one)


def test_restore_of_a_half_finished_run_counts_the_never_obfuscated(run, capsys, monkeypatch):
    src, key, dst, tmp = run
    _interrupt_after_first_chunk(monkeypatch)
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q", "--batch-size", "4"]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["restore", str(dst), str(tmp / "back"), "--key", str(key), "-q"]) == 1  # not all back
    out, err = capsys.readouterr()
    assert "restored 4" in out and "never obfuscated 8" in out, out
    assert "8 image(s) of this run were never obfuscated" in err
    assert "run the same obfuscate command again" in err
    # after the resume nothing is missing
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q", "--batch-size", "4"]) == 0
    capsys.readouterr()
    assert main(["restore", str(dst), str(tmp / "back"), "--key", str(key)]) == 0
    out, err = capsys.readouterr()
    assert "never obfuscated" not in out + err and "already done 4" in out


def test_restore_into_an_unrelated_folder_is_refused(run, capsys):
    src, key, dst, tmp = run
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q"]) == 0
    back = tmp / "back"
    (back / "c0").mkdir(parents=True)
    (back / "c0" / "holiday.png").write_bytes(b"someone else's")
    capsys.readouterr()
    assert main(["restore", str(dst), str(back), "--key", str(key), "-q"]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "c0/holiday.png" in err and "--overwrite" in err
    assert sorted(p.name for p in back.rglob("*") if p.is_file()) == ["holiday.png"]
    assert main(["restore", str(dst), str(back), "--key", str(key), "-q", "--overwrite"]) == 0
    assert len(list(back.rglob("*.png"))) == 13
    # an empty folder, and a folder of an earlier restore of this run (resume), are fine
    empty = tmp / "empty"
    empty.mkdir()
    assert main(["restore", str(dst), str(empty), "--key", str(key), "-q"]) == 0
    (empty / "c1" / "img001.png").unlink()
    capsys.readouterr()
    assert main(["restore", str(dst), str(empty), "--key", str(key)]) == 0
    assert "restored 1, already done 11" in capsys.readouterr().out


def test_a_manifest_path_that_is_a_key_file_is_refused_even_with_overwrite(run, capsys):
    """The way out the damaged-header message names (--overwrite) must not replace a key."""
    src, key, dst, tmp = run
    before = key.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main(["obfuscate", str(src), str(dst), "--key", str(key), "--manifest", str(key), "-q", *extra]) == 2
        err = capsys.readouterr().err
        assert "--manifest: " in err and "is the key file" in err
    other = tmp / "secret" / "other.key"  # another key (a link to it, or the library given a Key object)
    assert main(["keygen", str(other), "-q"]) == 0
    with pytest.raises(FileExistsError, match="is a visualmixer key file"):
        folders.obfuscate_folder(src, dst, Key.load(key), manifest=other, overwrite=True, progress=False)
    assert key.read_bytes() == before and other.read_bytes().startswith(b"visualmixer-key-v1\n")


def test_folders_and_files_in_the_wrong_place_are_usage_errors_naming_the_flag(run, capsys):
    src, key, dst, tmp = run
    folder, afile = tmp / "a-folder", tmp / "a-file"
    folder.mkdir(mode=0o700)
    afile.write_bytes(b"")
    cases = [
        (["obfuscate", str(src), str(dst), "--key", str(folder)], "--key: ", "is a folder"),
        (["obfuscate", str(src), str(dst), "--key", str(key), "--manifest", str(folder)], "--manifest: ",
         "is a folder"),
        (["obfuscate", str(src), str(afile), "--key", str(key)], "DST ", "is a file, not a folder"),
        (["restore", str(src), str(tmp / "back"), "--key", str(folder)], "--key: ", "is a folder"),
        (["restore", str(src), str(tmp / "back"), "--key", str(key), "--manifest", str(folder)], "--manifest: ",
         "is a folder"),
        (["restore", str(src), str(afile), "--key", str(key)], "RESTORED ", "is a file, not a folder"),
    ]
    for args, flag, what in cases:
        assert main([*args, "-q"]) == 2, args
        err = capsys.readouterr().err
        assert flag in err and what in err and "Errno" not in err, err


def test_an_interrupted_overwrite_run_resumes_with_the_command_it_prints(run, capsys, monkeypatch):
    """Resumed with --overwrite it would start over; without, it used to refuse the older run's
    files it had not replaced yet. The printed command leaves --overwrite out, and works."""
    src, key, dst, tmp = run
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q"]) == 0
    _interrupt_after_first_chunk(monkeypatch)
    argv = ["obfuscate", str(src), str(dst), "--key", str(key), "-q", "--batch-size", "4", "--overwrite"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    resume = err.split("resume with: ")[1].strip()
    assert "--overwrite" not in resume and "--batch-size 4" in resume, err
    monkeypatch.undo()
    assert main(resume.split()[1:]) == 0
    manifest = next((tmp / "secret").glob("k.key.photos-vm-*.manifest.jsonl"))
    lines = manifest.read_text().splitlines()
    assert sum('"t": "done"' in line for line in lines) == 12  # 4 before the stop, 8 after: not 4 + 12


def test_an_overwrite_run_stopped_before_its_manifest_keeps_overwrite_in_its_resume(run, capsys, monkeypatch):
    """Stopped while listing (no manifest yet): DST still holds the older run's files, so the
    printed command must start over with --overwrite, or it would be refused."""
    src, key, dst, tmp = run
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q"]) == 0

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(folders, "_list_sources", stop)
    other = tmp / "secret" / "other.key"
    assert main(["keygen", str(other), "-q"]) == 0
    capsys.readouterr()
    assert main(["obfuscate", str(src), str(dst), "--key", str(other), "-q", "--overwrite"]) == 130
    resume = capsys.readouterr().err.split("resume with: ")[1].strip()
    assert resume.endswith("--overwrite")
    monkeypatch.undo()
    assert main(resume.split()[1:]) == 0
