"""What a rerun of a finished folder run checks of its outputs: the stat signature recorded with
each output (size, modification time, inode) takes an unchanged output as intact without reading
it; a changed signature, a record without one (an earlier version's) or ``--verify-outputs``
hashes the output as before (``docs/tools.md``, "What a resume checks").

An output not older than the manifest's last write less ``safe_io.RACY_MARGIN_NS`` is hashed too.
A test run takes less than that margin, so tests that count what a rerun hashes date the manifest
forward (:meth:`Run.manifest_written_after_outputs`: the rerun comes later), except the one that
waits the margin out; no count assumes nanosecond times (file systems of whole seconds: ext4 with
128-byte inodes; FAT: 2 s)."""

from __future__ import annotations

import json
import os
import shutil
import time
import types
from pathlib import Path

import pytest
from PIL import Image

from visualmixer.cli import main
from visualmixer.tools import safe_io
from visualmixer.tools.manifest import Manifest
from visualmixer.tools.safe_io import source_signature

try:
    from _vm_files import smooth_rgb
except ImportError:  # tests/ as a package
    from ._vm_files import smooth_rgb

MODES = {"plain": [], "mix": ["--mix", "2"], "rename": ["--rename"]}
#: How much later than the newest output :meth:`Run.manifest_written_after_outputs` dates the
#: manifest by default: more than ``safe_io.RACY_MARGIN_NS`` (checked below).
LATER_NS = 5 * 10**9


class Run:
    """A key, ``src/c0, c1`` (4 images), and obfuscate calls into ``dst`` with manifest ``m.jsonl``."""

    def __init__(self, tmp_path: Path, capsys, mode: str = "plain"):
        self.key, self.src, self.dst = tmp_path / "k.key", tmp_path / "src", tmp_path / "dst"
        self.man, self.capsys, self.extra = tmp_path / "m.jsonl", capsys, MODES[mode]
        assert main(["keygen", str(self.key), "-q"]) == 0
        for i in range(4):
            path = self.src / f"c{i % 2}" / f"img{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(smooth_rgb(16, 16, i)).save(path)

    def obfuscate(self, *args: str, dst: Path | None = None, man: Path | None = None) -> tuple[str, str]:
        self.capsys.readouterr()
        rc = main(["obfuscate", str(self.src), str(dst or self.dst), "--key", str(self.key),
                   "--manifest", str(man or self.man), *self.extra, *args])
        out, err = self.capsys.readouterr()
        assert rc == 0, err
        return out, err

    def outputs(self, dst: Path | None = None) -> dict[str, bytes]:
        root = dst or self.dst
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}

    def an_output(self) -> Path:
        return self.dst / Manifest.read(self.man).done()[0]["out"]

    def manifest_written_after_outputs(self, by_ns: int = LATER_NS) -> None:
        """Date the manifest's last write ``by_ns`` after the newest output (as when the rerun
        comes a while after the run, or the run ended a while after its last output; an output
        not older than it less the racy margin is hashed anyway)."""
        newest = max(p.stat().st_mtime_ns for p in self.dst.rglob("*.png"))
        st = self.man.stat()
        os.utime(self.man, ns=(st.st_atime_ns, max(st.st_mtime_ns, newest + by_ns)))


@pytest.fixture()
def hashed(monkeypatch) -> list[int]:
    """The sizes of everything :mod:`~visualmixer.tools.safe_io` hashes from then on."""
    import hashlib

    sizes: list[int] = []

    class Counting:
        def __init__(self, data: bytes = b""):
            self._h = hashlib.sha256(data)
            sizes.append(len(data))

        def update(self, data) -> None:
            sizes[-1] += len(data)
            self._h.update(data)

        def hexdigest(self) -> str:
            return self._h.hexdigest()

    monkeypatch.setattr(safe_io, "hashlib", types.SimpleNamespace(sha256=Counting))
    return sizes


def _edit_keeping_stat(path: Path) -> None:
    """Change one byte in place (same size, same inode) and put the modification time back."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-20] ^= 1
    with open(path, "r+b") as fh:
        fh.write(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert source_signature(path.stat()) == source_signature(st)


def test_the_manifest_is_dated_later_than_the_racy_margin():
    assert safe_io.RACY_MARGIN_NS < LATER_NS


@pytest.mark.parametrize("mode", list(MODES))
def test_a_rerun_with_nothing_to_do_reads_no_output(tmp_path, capsys, hashed, mode):
    """(An earlier version hashed all 4 outputs on every rerun; a mixed one, twice.)"""
    run = Run(tmp_path, capsys, mode)
    run.obfuscate("-q")
    run.manifest_written_after_outputs()  # outputs of the run's last seconds: the next test
    for _ in range(2):
        hashed.clear()
        out, err = run.obfuscate()
        assert "obfuscated 0, already done 4" in out and not err
        assert sum(hashed) == 0, hashed


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_outputs_of_the_runs_last_seconds_are_hashed_once_then_signed(tmp_path, capsys, hashed, mode):
    """Nothing dated by hand: the outputs within the racy margin of the manifest's last write (here
    all, or nearly) are hashed by a rerun; one that comes more than twice the margin after them
    signs them again, and the rerun after reads none. Takes about 4 s."""
    run = Run(tmp_path, capsys, mode)
    run.obfuscate("-q")
    man = Manifest.read(run.man)
    newest = max(man.output_sig(r)[1] for r in man.done())
    racy = sorted(r["bytes"] for r in man.done()
                  if man.output_sig(r)[1] >= man.mtime_ns - safe_io.RACY_MARGIN_NS)
    assert racy  # 4 small images take less than the margin
    time.sleep(max(0, newest + 2 * safe_io.RACY_MARGIN_NS - time.time_ns()) / 1e9 + 0.1)
    hashed.clear()
    out, err = run.obfuscate()
    assert "obfuscated 0, already done 4" in out and not err
    assert sorted(hashed) == racy  # each once
    hashed.clear()
    out, err = run.obfuscate()
    assert "obfuscated 0, already done 4" in out and not err
    assert sum(hashed) == 0, hashed


@pytest.mark.parametrize("mode", ["plain", "mix"])
def test_verify_outputs_hashes_every_output_once(tmp_path, capsys, hashed, mode):
    run = Run(tmp_path, capsys, mode)
    run.obfuscate("-q")
    hashed.clear()
    out, _ = run.obfuscate("--verify-outputs")
    assert "already done 4" in out
    assert sorted(hashed) == sorted(len(b) for b in run.outputs().values())


def test_a_truncated_output_is_done_again(tmp_path, capsys):
    run = Run(tmp_path, capsys)
    run.obfuscate("-q")
    before = run.outputs()
    with open(run.an_output(), "r+b") as fh:
        fh.truncate(100)
    out, err = run.obfuscate()
    assert "1 output(s) differ from what the manifest records" in err
    assert "obfuscated 1, already done 3" in out and run.outputs() == before


@pytest.mark.parametrize("mode", ["plain", "mix"])
@pytest.mark.parametrize("how", ["mtime", "inode"])
def test_a_same_size_replacement_with_another_stat_is_done_again(tmp_path, capsys, mode, how):
    run = Run(tmp_path, capsys, mode)
    run.obfuscate("-q")
    run.manifest_written_after_outputs()
    before, path = run.outputs(), run.an_output()
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-20] ^= 1
    if how == "mtime":  # the same file (inode) edited, with another modification time
        with open(path, "r+b") as fh:
            fh.write(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    else:  # another file put in its place, with the old modification time
        other = path.with_name("other")
        other.write_bytes(bytes(data))
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(other, path)
    assert path.stat().st_size == st.st_size
    out, err = run.obfuscate()
    assert "1 output(s) differ from what the manifest records" in err
    assert ("obfuscated 2, already done 2" if mode == "mix" else "obfuscated 1, already done 3") in out
    assert run.outputs() == before


@pytest.mark.parametrize("mode", ["plain", "mix"])
def test_an_edit_that_keeps_size_and_mtime_passes_unless_verify_outputs(tmp_path, capsys, mode):
    run = Run(tmp_path, capsys, mode)
    run.obfuscate("-q")
    run.manifest_written_after_outputs()
    before, path = run.outputs(), run.an_output()
    _edit_keeping_stat(path)
    edited = path.read_bytes()
    out, err = run.obfuscate()  # the documented limit of the default check
    assert "already done 4" in out and not err
    assert path.read_bytes() == edited
    out, err = run.obfuscate("--verify-outputs")
    assert "1 output(s) differ from what the manifest records" in err
    assert ("obfuscated 2, already done 2" if mode == "mix" else "obfuscated 1, already done 3") in out
    assert run.outputs() == before


@pytest.mark.parametrize("manifest_later_ns", [0, 1_500_000_000])
def test_an_output_as_new_as_the_manifest_is_hashed(tmp_path, capsys, manifest_later_ns):
    """An output written in the manifest's last timestamp tick could have been edited in that tick
    too without its modification time changing (coarse file-system clocks): it is hashed. Also
    one up to the racy margin older: on DST of whole seconds (FAT: 2 s) with the manifest on a
    file system of nanoseconds, the output's time is up to a step before the manifest's (before,
    only an output time not older than the manifest's counted)."""
    run = Run(tmp_path, capsys)
    run.obfuscate("-q")
    path = run.an_output()
    _edit_keeping_stat(path)
    st = run.man.stat()
    os.utime(run.man, ns=(st.st_atime_ns, path.stat().st_mtime_ns + manifest_later_ns))
    out, err = run.obfuscate()
    assert "1 output(s) differ from what the manifest records" in err
    assert "obfuscated 1, already done 3" in out


def _drop_signatures(man: Path) -> None:
    """Make ``man`` as an earlier version wrote it: no output signatures."""
    lines = []
    for line in man.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("t") == "sigs":
            continue
        rec.pop("out_sig", None)
        lines.append(json.dumps(rec, sort_keys=True))
    man.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("mode", ["plain", "mix"])
def test_a_record_without_a_signature_is_hashed(tmp_path, capsys, mode):
    run = Run(tmp_path, capsys, mode)
    run.obfuscate("-q")
    before, path = run.outputs(), run.an_output()
    _drop_signatures(run.man)
    assert not any("out_sig" in r for r in Manifest.read(run.man).done())
    _edit_keeping_stat(path)
    out, err = run.obfuscate()
    assert "1 output(s) differ from what the manifest records" in err
    assert ("obfuscated 2, already done 2" if mode == "mix" else "obfuscated 1, already done 3") in out
    assert run.outputs() == before


@pytest.mark.parametrize("mode", ["plain", "mix", "rename"])
@pytest.mark.parametrize("how", ["old manifest", "copied outputs"])
def test_outputs_hashed_intact_are_signed_for_the_next_rerun(tmp_path, capsys, hashed, mode, how):
    """A rerun that had to hash intact outputs (records of an earlier version; outputs copied back
    with their times but new inodes) records their signatures: the rerun after reads none."""
    run = Run(tmp_path, capsys, mode)
    run.obfuscate("-q")
    sizes = sorted(len(b) for b in run.outputs().values())
    if how == "old manifest":
        _drop_signatures(run.man)
    else:
        shutil.copytree(run.dst, tmp_path / "copy", copy_function=shutil.copy2)
        run.dst.rename(tmp_path / "old")  # kept: the copies cannot have its inodes
        (tmp_path / "copy").rename(run.dst)
    hashed.clear()
    out, err = run.obfuscate()
    assert "already done 4" in out and not err
    assert sorted(hashed) == sizes
    run.manifest_written_after_outputs()  # the next rerun comes later: nothing is racy
    hashed.clear()
    out, err = run.obfuscate()
    assert "already done 4" in out and not err
    assert sum(hashed) == 0


@pytest.mark.parametrize("mode", list(MODES))
def test_the_recorded_signature_is_the_final_files(tmp_path, capsys, mode):
    """Not a temporary file's (outputs are renamed into place) nor, for releases settled after
    the run (``--mix``, ``--rename``), the one of the file before settling."""
    run = Run(tmp_path, capsys, mode)
    run.obfuscate("-q")
    man = Manifest.read(run.man)
    assert len(man.done()) == 4
    for rec in man.done():
        assert man.output_sig(rec) == source_signature((run.dst / rec["out"]).stat()), rec["out"]
    if mode == "plain":
        assert all(r["out_sig"] == man.output_sig(r) for r in man.done())


def test_the_latest_signature_of_an_output_wins_also_when_read_again(tmp_path):
    """A ``sigs`` line names an output's signature until a later ``pending`` or ``done`` record of
    that output; it is no image's record (``done()``, ``records``)."""
    from visualmixer.tools.manifest import sigs_records

    man = Manifest.create(tmp_path / "m.jsonl", {"tool": "test"})
    done = {"t": "done", "id": "a.png", "out": "a.png", "out_sig": [1, 2, 3]}
    man.append([done, {"t": "done", "id": "b.png", "out": "b.png"}])
    man.append(sigs_records({"a.png": [1, 5, 6], "b.png": [7, 8, 9], "gone.png": None}))
    for m in (man, Manifest.read(man.path)):
        assert [m.output_sig(r) for r in m.done()] == [[1, 5, 6], [7, 8, 9]]
    man.append([{"t": "pending", "id": "b.png", "out": "b.png"}, {**done, "out_sig": [4, 4, 4]},
                {"t": "done", "id": "b.png", "out": "b.png"}])
    man.close()
    for m in (man, Manifest.read(man.path)):
        assert [m.output_sig(r) for r in m.done()] == [[4, 4, 4], None]
        assert sorted(m.records) == ["a.png", "b.png"] and m.written == {"a.png", "b.png"}
    assert Manifest.read(man.path).mtime_ns == man.path.stat().st_mtime_ns
