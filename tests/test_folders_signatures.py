"""When a recorded output signature may vouch for an output (``safe_io.OutputCheck``), and when it
is recorded (``settle.settle_outputs``, signing on a resume): regression tests of a review of the
signature fast path (``docs/tools.md``, "What a resume checks").

- Settling (``--rename``, ``--mix``) rewrote every released output and signed each one without
  checking it: an output damaged while the run wrote other images, or while its source was away,
  was then taken as intact by the next rerun (the release before signatures did it again).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from PIL import Image

from visualmixer.tools.manifest import Manifest, sigs_records
from visualmixer.tools.safe_io import OutputCheck, StopGuard, output_signature
from visualmixer.tools.settle import settle_outputs

try:
    from _vm_files import smooth_rgb
    from test_folders_resume import Run
except ImportError:  # tests/ as a package
    from ._vm_files import smooth_rgb
    from .test_folders_resume import Run


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
