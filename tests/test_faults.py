"""Fault injection for the folder tools (issue 15): one fault per trial — SIGKILL, SIGINT, disk
full, permission denied, EIO on read, a concurrent second run, power lost mid-append, a source file
replaced, a manifest of an earlier format — then resume, and check that every output is
byte-identical to an undisturbed run, every restore pixel-exact, no temporary file left, the
source unchanged, and that the user read one line with the documented exit code.

The fast part (one trial of each kind on a small corpus) runs in ``make test``. The long run
(``scripts/fault_suite.sh``: N random trials on a few hundred images) is marked ``faults`` and
runs only when ``VM_FAULT_RUNS`` is set; it writes its figures to ``VM_FAULT_REPORT``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

try:
    import _faults as F
except ImportError:  # tests/ as a package
    from . import _faults as F

from visualmixer.cli import main

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs Linux /proc")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    src = base / "src"
    F.make_corpus(src, 36, seed=1)
    key = base / "k.key"
    assert main(["keygen", str(key), "-q"]) == 0
    ref = F.make_reference(src, key, base / "ref", batch_size=4)
    return base, src, key, ref


def _assert_clean(report: dict) -> None:
    assert report["lost"] == 0, report
    assert report["extra"] == [], report
    assert report["wrong_restores"] == 0, report
    assert report["restore_rc"] == report["restore_rc_expected"], report
    assert report["temps"] == [], report
    assert report["src_unchanged"], report


@pytest.mark.parametrize("kind", F.KINDS)
def test_one_fault_of_each_kind(corpus, kind):
    base, src, key, ref = corpus
    assert ref.rc == 1 and len(ref.done_ids) == 33  # 3 broken files fail in every run
    report = F.run_trial(kind, seed=0, base=base / "trials", src_master=src, key=key, ref=ref,
                         batch_size=4)
    _assert_clean(report)
    assert F.fired(report), report["notes"]


@pytest.mark.parametrize("kind", F.RESTORE_KINDS)
def test_one_fault_of_each_kind_during_restore(corpus, kind):
    base, src, key, ref = corpus
    report = F.run_trial(kind, seed=0, base=base / "restore-trials", src_master=src, key=key,
                         ref=ref, batch_size=4, target="restore")
    _assert_clean(report)
    assert F.fired(report), report["notes"]


@pytest.mark.parametrize("kind", ["concurrent", "sigkill"])
def test_worker_processes_never_hold_the_lock(corpus, kind):
    """With --workers 2 the driver holds the lock: a second run is refused while it runs, and
    after kill -9 of the driver the rerun gets the lock (its orphaned workers do not keep it)."""
    base, src, key, ref = corpus
    report = F.run_trial(kind, seed=3, base=base / "workers", src_master=src, key=key, ref=ref,
                         batch_size=4, workers=2, target="obfuscate")
    _assert_clean(report)
    assert F.fired(report), report["notes"]


def test_source_vanishing_or_changing_mid_run_fails_that_image_only(corpus, tmp_path):
    base, src, key, ref = corpus
    from visualmixer.tools import safe_io

    copy = tmp_path / "src"
    F.shutil.copytree(src, copy)
    gone, edited = ref.done_ids[0], ref.done_ids[5]
    real_open = open

    class Growing:
        """A file that grows while it is read (another program still writing it)."""

        def __init__(self, path):
            self._fh, self._path = real_open(path, "rb"), path

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()

        def fileno(self):
            return self._fh.fileno()

        def read(self):
            data = self._fh.read()
            with real_open(self._path, "ab") as fh:
                fh.write(b"more")
            return data

    def fake_open(path, *args, **kwargs):
        rel = F.Path(path).relative_to(copy).as_posix()
        if rel == gone:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        if rel == edited:
            return Growing(path)
        return real_open(path, *args, **kwargs)

    t = F.Trial("vanish", F.random.Random(0), copy, key, tmp_path, ref, 4)
    safe_io.open = fake_open
    try:
        res = t.rerun()
    finally:
        del safe_io.open
    assert res.rc == 1 and "Traceback" not in res.err
    assert f"{gone}: source file vanished during the run (rerun when it is back)" in res.err
    assert f"{edited}: source file changed while it was read (rerun to retry)" in res.err
    (copy / edited).write_bytes((src / edited).read_bytes())  # the writer finished: as before
    res = t.rerun()
    assert res.rc == ref.rc, res.err
    t.expect_src = F.tree_hashes(src)
    _assert_clean(F.check_trial(t))


def test_damaged_header_is_one_line_naming_overwrite(corpus, tmp_path):
    base, src, key, ref = corpus
    man = tmp_path / "m.jsonl"
    man.write_bytes(b'{"t": "head\x00\x00\n{"t": "done", "id": "x"}\n')
    res = F.run_cli(["obfuscate", src, tmp_path / "d", "--key", key, "-q", "--manifest", man])
    assert res.rc == 2
    F.one_line_error(res, "line 1 is not a visualmixer manifest header", "--overwrite")


@pytest.mark.skipif(not F._tmpfs_ok(), reason="needs root and mount")
def test_enospc_on_a_small_tmpfs(corpus):
    base, src, key, ref = corpus

    def on_tmpfs(t):
        if not F.enospc_tmpfs(t):
            pytest.skip("cannot mount a tmpfs here")

    report = F.run_trial("enospc", seed=1, base=base / "tmpfs", src_master=src, key=key, ref=ref,
                         batch_size=4, inject=on_tmpfs)
    _assert_clean(report)
    assert F.fired(report), report["notes"]


@pytest.mark.faults
@pytest.mark.skipif(not os.environ.get("VM_FAULT_RUNS"), reason="long run: scripts/fault_suite.sh")
def test_fault_suite_long(tmp_path):
    runs = int(os.environ["VM_FAULT_RUNS"])
    images = int(os.environ.get("VM_FAULT_IMAGES", "300"))
    seed = int(os.environ.get("VM_FAULT_SEED", "0"))
    t0 = time.perf_counter()
    src = tmp_path / "src"
    broken = F.make_corpus(src, images, seed=seed)
    key = tmp_path / "k.key"
    assert main(["keygen", str(key), "-q"]) == 0
    ref = F.make_reference(src, key, tmp_path / "ref", batch_size=8)
    reports, failures = [], []
    for n in range(runs):
        kind = F.KINDS[n % len(F.KINDS)]
        try:
            rep = F.run_trial(kind, seed=seed * 1000 + n, base=tmp_path / "trials", src_master=src,
                              key=key, ref=ref, batch_size=8)
        except AssertionError as exc:  # a failed check: counted and shown, the suite goes on
            rep = {"kind": kind, "lost": -1, "wrong_restores": -1, "error": str(exc)[:500]}
            failures.append(rep)
        reports.append(rep)
    injected = [r for r in reports if "notes" not in r or F.fired(r)]
    figures = {
        "faults": len(injected),
        "trials_run": len(reports),
        "kinds": len({r["kind"] for r in injected}),
        "per_kind": dict(Counter(r["kind"] for r in injected)),
        "images": images,
        "broken_images": len(broken),
        "images_lost": sum(max(r["lost"], 0) for r in reports),
        "wrong_restores": sum(max(r["wrong_restores"], 0) for r in reports),
        "temp_files_left": sum(len(r.get("temps", [])) for r in reports),
        "source_changed": sum(1 for r in reports if r.get("src_unchanged") is False),
        "failed_checks": len(failures),
        "seconds": round(time.perf_counter() - t0, 1),
        "trials": reports,
    }
    out = os.environ.get("VM_FAULT_REPORT")
    if out:
        Path(out).write_text(json.dumps(figures, indent=1) + "\n")
    print(f"\n{figures['faults']} faults of {figures['kinds']} kinds injected, "
          f"{figures['images_lost']} images lost, {figures['wrong_restores']} wrong restores, "
          f"{figures['failed_checks']} failed checks ({figures['seconds']} s)")
    assert not failures, failures
    for rep in reports:
        _assert_clean(rep)
