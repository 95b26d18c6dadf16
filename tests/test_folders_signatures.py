"""When a recorded output signature may vouch for an output (``safe_io.OutputCheck``), and when it
is recorded (``settle.settle_outputs``, signing on a resume): regression tests of a review of the
signature fast path (``docs/tools.md``, "What a resume checks").

- Settling (``--rename``, ``--mix``) rewrote every released output and signed each one without
  checking it: an output damaged while the run wrote other images, or while its source was away,
  was then taken as intact by the next rerun (the release before signatures did it again).
- The racy rule compared an output's time on DST with the manifest's: with DST on a file system
  of whole seconds (or FAT's 2 s) and the manifest on one of nanoseconds it never fired.
- An output dated in the future was signed again on every rerun: the manifest grew each time.
- A damaged ``sigs`` line was reported as "the images they described are done again".
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from visualmixer.tools import imageio as vio
from visualmixer.tools.manifest import Manifest, sigs_records
from visualmixer.tools.safe_io import OutputCheck, StopGuard, output_signature
from visualmixer.tools.settle import settle_outputs

try:
    from _vm_files import smooth_rgb
    from test_folders_resume import Run, _edit_keeping_stat
    from test_folders_resume import hashed as hashed  # the fixture
except ImportError:  # tests/ as a package
    from ._vm_files import smooth_rgb
    from .test_folders_resume import Run, _edit_keeping_stat
    from .test_folders_resume import hashed as hashed


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _flip_a_byte(path: Path) -> None:
    """Damage ``path`` in place: same size and inode, another modification time (set: a write
    within the same second would keep it on a file system of whole seconds)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-20] ^= 1
    with open(path, "r+b") as fh:
        fh.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))


def _output_of(run: Run, image_id: str) -> Path:
    return run.dst / next(r["out"] for r in Manifest.read(run.man).done() if r["id"] == image_id)


# -- settling signs only what it found as recorded ----------------------------------------------
def test_settling_signs_only_outputs_as_their_records_say(tmp_path):
    """(Before: both signed.) A ``null`` signature revokes an earlier one: the output is hashed."""
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "a.png").write_bytes(b"good bytes")
    (dst / "b.png").write_bytes(b"bad bytes!")  # the recorded size, other bytes
    records = {"a.png": {"bytes": 10, "sha256": _sha(b"good bytes")},
               "b.png": {"bytes": 10, "sha256": _sha(b"good byte2")}}
    sigs = settle_outputs(dst, records, StopGuard(tmp_path / "m.jsonl", 2), when=1_700_000_000)
    assert sigs == {"a.png": output_signature(dst / "a.png"), "b.png": None}
    assert (dst / "b.png").read_bytes() == b"bad bytes!"  # settled all the same (bytes unchanged)
    man = Manifest.create(tmp_path / "m.jsonl", {"tool": "test"})
    man.append([{"t": "done", "id": "b.png", "out": "b.png", "out_sig": [1, 2, 3]}])
    man.append(sigs_records(sigs))
    man.close()
    assert Manifest.read(man.path).output_sig({"out": "b.png", "out_sig": [1, 2, 3]}) is None


@pytest.mark.parametrize("mode", ["rename", "mix"])
def test_an_output_damaged_while_a_run_writes_others_is_done_again(tmp_path, capsys, monkeypatch, mode):
    """Another process damages a finished output (same size) while a rerun writes a new image;
    that rerun's settling rewrites it. Before, it signed it, and the rerun after took it as intact
    (/tmp/rv/settle_midrun.py of the review)."""
    run = Run(tmp_path, capsys, mode)
    run.obfuscate("-q")
    victim = _output_of(run, "c0/img0.png")
    good = victim.read_bytes()
    Image.fromarray(smooth_rgb(16, 16, 9)).save(run.src / "c1" / "new.png")  # work for the rerun
    real, damaged = StopGuard.write_output, []

    def write_and_damage(self, path, data):
        if path != victim and not damaged:
            _flip_a_byte(victim)
            damaged.append(path)
        return real(self, path, data)

    monkeypatch.setattr(StopGuard, "write_output", write_and_damage)
    out, _ = run.obfuscate()
    monkeypatch.setattr(StopGuard, "write_output", real)
    assert "obfuscated 1, already done 4" in out and damaged and victim.read_bytes() != good
    run.manifest_written_after_outputs()  # the next rerun comes later: no output is racy
    out, err = run.obfuscate()
    assert "1 output(s) differ from what the manifest records" in err
    assert victim.read_bytes() == good
    out, err = run.obfuscate()  # (a mixed run notes that it keeps its groups: new.png came later)
    assert "obfuscated 0, already done 5" in out and "differ" not in err


def test_an_output_damaged_while_its_source_is_away_is_done_again(tmp_path, capsys):
    """A renamed release: an image whose source is away is not listed, but its output is settled
    with the others. Before, a damaged one was signed, and kept when the source came back
    (/tmp/rv/settle_signs_damaged.py --rename of the review)."""
    run = Run(tmp_path, capsys, "rename")
    run.obfuscate("-q")
    victim, source = _output_of(run, "c0/img0.png"), run.src / "c0" / "img0.png"
    good = victim.read_bytes()
    source.rename(tmp_path / "img0.away")
    _flip_a_byte(victim)
    out, _ = run.obfuscate()  # the victim's time differs from the others': settled again
    assert "obfuscated 0, already done 3" in out
    (tmp_path / "img0.away").rename(source)
    run.manifest_written_after_outputs()
    out, err = run.obfuscate()
    assert "1 output(s) differ from what the manifest records" in err
    assert "obfuscated 1, already done 3" in out and victim.read_bytes() == good


def test_a_signature_of_another_size_than_the_record_is_not_trusted(tmp_path):
    """Whatever recorded it: a size that is not the record's ``bytes`` is not that output."""
    path = tmp_path / "a.png"
    path.write_bytes(b"x" * 100)
    man = Manifest.create(tmp_path / "m.jsonl", {"tool": "test"})
    man.append([{"t": "done", "id": "a.png", "out": "a.png", "bytes": 200, "sha256": _sha(b"x" * 200),
                 "out_sig": output_signature(path)}])
    man.close()
    later = path.stat().st_mtime_ns + 60 * 10**9  # nothing racy
    os.utime(man.path, ns=(later, later))
    man = Manifest.read(man.path)
    assert not OutputCheck(man).intact(path, man.records["a.png"])


# -- the racy rule across file systems of other time steps ----------------------------------------
def test_a_same_second_edit_on_a_dst_of_whole_seconds_is_hashed(tmp_path, capsys, monkeypatch):
    """DST on a file system that stores whole seconds (ext4 with 128-byte inodes; FAT: 2 s), the
    manifest on one of nanoseconds: an output edited in place within the second it was written
    keeps its size, inode and time, and its time is then up to a second before the manifest's
    last write. Before, only an output time not older than the manifest's was racy, so the edit
    passed (/tmp/rv/racy.py of the review, here with the times cut to seconds by hand)."""
    run = Run(tmp_path, capsys)
    real_atomic, real_write, edited = vio.write_bytes_atomic, StopGuard.write_output, []

    def whole_seconds(path, data, **kw):  # what such a DST stores
        real_atomic(path, data, **kw)
        ns = os.stat(path).st_mtime_ns // 10**9 * 10**9
        os.utime(path, ns=(ns, ns))

    def write_then_edit(self, path, data):
        sig = real_write(self, path, data)
        if not edited:  # another process edits it at once, within the same second
            _edit_keeping_stat(path)
            edited.append(path)
        return sig

    monkeypatch.setattr(vio, "write_bytes_atomic", whole_seconds)
    monkeypatch.setattr(StopGuard, "write_output", write_then_edit)
    run.obfuscate("-q")
    monkeypatch.undo()
    st, t = run.man.stat(), edited[0].stat().st_mtime_ns
    if st.st_mtime_ns <= t:  # the manifest is on a file system of whole seconds too: its next tick
        os.utime(run.man, ns=(st.st_atime_ns, t + 10**9))
    man = Manifest.read(run.man)
    rec = next(r for r in man.done() if run.dst / r["out"] == edited[0])
    assert man.output_sig(rec) == output_signature(edited[0])
    assert t < man.mtime_ns < t + 2 * 10**9  # older than the manifest, by less than 2 s
    out, err = run.obfuscate()
    assert "1 output(s) differ from what the manifest records" in err
    assert "obfuscated 1, already done 3" in out


# -- outputs dated in the future -------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["plain", "rename"])
def test_outputs_dated_in_the_future_do_not_grow_the_manifest(tmp_path, capsys, hashed, mode):
    """Outputs with a time an hour ahead (clock skew, ``cp -p`` from a machine ahead; whole
    seconds, as a settled release) are racy on every rerun: hashed each time. Before, each rerun
    also signed them again, and the manifest grew by a ``sigs`` line each time
    (/tmp/rv/future.py of the review)."""
    run = Run(tmp_path, capsys, mode)
    run.obfuscate("-q")
    ahead = (time.time_ns() // 10**9 + 3600) * 10**9
    for path in run.dst.rglob("*.png"):
        os.utime(path, ns=(ahead, ahead))
    sizes = sorted(len(b) for b in run.outputs().values())
    sizes_after = []
    for _ in range(3):
        hashed.clear()
        out, err = run.obfuscate()
        assert "obfuscated 0, already done 4" in out and not err
        assert sorted(hashed) == sizes
        sizes_after.append(run.man.stat().st_size)
    assert sizes_after[0] == sizes_after[1] == sizes_after[2]  # signed once (a new time), not again


# -- a damaged sigs line ---------------------------------------------------------------------------
def test_a_damaged_sigs_line_redoes_nothing_and_says_so(tmp_path, capsys, hashed):
    """(Before: "the images they described are done again", and nothing was.)"""
    run = Run(tmp_path, capsys, "rename")
    run.obfuscate("-q")
    before = run.outputs()
    lines = run.man.read_bytes().split(b"\n")
    i = next(k for k, line in enumerate(lines) if b'"t": "sigs"' in line)
    lines[i] = lines[i][:30] + b"\x00" * (len(lines[i]) - 30)  # power lost while it was written
    done = next(line for line in lines if b'"t": "done"' in line)
    run.man.write_bytes(b"\n".join(lines[:-1] + [done, b""]))  # and a later run appended after it
    hashed.clear()
    out, err = run.obfuscate()
    assert f"1 damaged line(s) of output signatures skipped (line {i + 1};" in err
    assert "nothing is done again" in err and "described are done again" not in err
    assert "obfuscated 0, already done 4" in out and run.outputs() == before
    assert sorted(hashed) == sorted(len(b) for b in before.values())  # hashed instead


def test_a_damaged_sigs_line_that_swallowed_a_record_is_not_called_signatures_only(tmp_path, capsys, hashed):
    """Zeros can run from a ``sigs`` line into the record after it: that image is done again, and
    the warning says so (before: "nothing is done again")."""
    run = Run(tmp_path, capsys, "rename")
    run.obfuscate("-q")
    lines = run.man.read_bytes().split(b"\n")
    i = next(k for k, line in enumerate(lines) if b'"t": "sigs"' in line)
    j = next(k for k, line in enumerate(lines) if b'"t": "done"' in line)
    done = lines.pop(j)
    i = i - 1 if j < i else i
    merged = lines[i][:30] + b"\x00" * (len(lines[i]) - 30 + 1 + 40) + done[40:]
    lines[i] = merged
    run.man.write_bytes(b"\n".join(lines))
    out, err = run.obfuscate()
    assert "the images they described are done again" in err and "nothing is done again" not in err
    assert "obfuscated 1, already done 3" in out
