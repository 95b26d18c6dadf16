"""The fault-injection harness of tests/test_faults.py (issue 15): a corpus of real-format images,
an undisturbed reference run, one injected fault per trial, the resume, and the checks.

Each kind of fault is a function ``inject_<kind>(trial)`` that disturbs one run at a random point
(drawn from ``trial.rng``), checks what the user saw (exit code, one-line message), clears the
fault and resumes; :func:`check_trial` then checks the destination against the reference run:
every output byte-identical, every restore pixel-exact (byte-identical to the verified reference
restore), no temporary file left, the source tree unchanged (except a file the fault replaced on
purpose, then checked against a reference made from the new source).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from _vm_files import smooth_rgb
from visualmixer.cli import main
from visualmixer.tools import imageio as vio
from visualmixer.tools import safe_io
from visualmixer.tools.manifest import Manifest

SRC_DIR = Path(__file__).resolve().parents[1] / "src"
FIXTURE_V1 = Path(__file__).resolve().parent / "fixtures" / "v1"
KINDS = ["sigkill", "sigint", "enospc", "eacces", "eio_read", "concurrent", "truncated_manifest",
         "source_replaced", "old_manifest"]
SIZES = [(32, 32), (48, 40), (40, 56), (64, 64)]


# -- corpus -------------------------------------------------------------------------------------
def _smooth(h: int, w: int, seed: int) -> np.ndarray:
    return smooth_rgb(h, w, seed, max_freq=0.2, noise=8.0)  # the fault corpus: a little busier


def image_bytes(seed: int, fmt: str) -> bytes:
    """One real PNG or JPEG file (RGB or grey, one of a few sizes)."""
    h, w = SIZES[seed % len(SIZES)]
    arr = _smooth(h, w, seed)
    im = Image.fromarray(arr[..., 0] if seed % 7 == 3 else arr)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def make_corpus(root: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` files in three folders: mixed JPEG/PNG, about 1 in 12 broken; returns the broken ids."""
    rng = random.Random(seed)
    broken = []
    for i in range(n):
        fmt = "JPEG" if rng.random() < 0.4 else "PNG"
        ext = ".jpg" if fmt == "JPEG" else ".png"
        rel = f"class{i % 3}/img{i:04d}{ext}"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = image_bytes(seed * 100003 + i, fmt)
        if i % 12 == 5:
            data = [b"", data[: len(data) // 2], b"not an image\n" * 3][i % 3]
            broken.append(rel)
        path.write_bytes(data)
    (root / "labels.txt").write_text("not an image: ignored\n")
    return broken


def tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def temp_files(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        if root.exists():
            found += [str(p) for p in root.rglob(f"*{vio.TEMP_SUFFIX}")]
            found += [str(p) for p in root.rglob(".*.new")]
    return found


# -- running the CLI ------------------------------------------------------------------------------
@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [li for li in self.err.splitlines() if li.startswith("visualmixer ")]


def run_cli(args: list[str]) -> Result:
    """The CLI in this process (stdout/stderr captured)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as exc:  # argparse
            rc = int(exc.code or 0)
    return Result(rc, out.getvalue(), err.getvalue())


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(SRC_DIR) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "visualmixer", *map(str, args)], env=env(),
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def count_done(manifest: Path) -> int:
    try:
        return manifest.read_bytes().count(b'"t": "done"')
    except OSError:
        return 0


def wait_for(pred, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.003)
    return False


# -- one trial ------------------------------------------------------------------------------------
@dataclass
class Reference:
    """An undisturbed run over a corpus: outputs, exit code, restored tree."""

    src: Path
    key: Path
    outputs: dict[str, str]
    rc: int
    restored: dict[str, str]
    done_ids: list[str]
    dst_bytes: int = 0
    restore_rc: int = 0  # 1 when the corpus holds broken files: restore cannot give those back


def make_reference(src: Path, key: Path, work: Path, batch_size: int) -> Reference:
    dst, man = work / "dst", work / "ref.manifest.jsonl"
    res = run_cli(["obfuscate", src, dst, "--key", key, "-q", "--batch-size", batch_size,
                   "--manifest", man])
    assert res.rc in (0, 1), res.err
    back = work / "restored"
    rr = run_cli(["restore", dst, back, "--key", key, "-q", "--manifest", man])
    assert rr.rc == res.rc, rr.err  # images obfuscate failed are not restored: exit 1 as well
    done = [r["id"] for r in Manifest.read(man).done()]
    for image_id in done:  # the reference restore is pixel-exact (after the documented conversions)
        name = image_id.rsplit(".", 1)[0] + ".png"
        assert np.array_equal(vio.read_image(back / name).numpy(),
                              vio.read_image(src / image_id).numpy()), image_id
    size = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    return Reference(src, key, tree_hashes(dst), res.rc, tree_hashes(back), done, size, rr.rc)


@dataclass
class Trial:
    kind: str
    rng: random.Random
    src: Path
    key: Path
    work: Path
    ref: Reference
    batch_size: int
    workers: int = 1
    target: str = "obfuscate"  # or "restore": the fault hits the restore of a finished run
    notes: list[str] = field(default_factory=list)
    expect_src: dict[str, str] | None = None  # source hashes after a deliberate change
    ref_override: Reference | None = None

    @property
    def dst(self) -> Path:
        return self.work / "dst"

    @property
    def manifest(self) -> Path:
        return self.work / "dst.manifest.jsonl"

    def args(self, *extra) -> list:
        return ["obfuscate", self.src, self.dst, "--key", self.key, "-q", "--batch-size",
                self.batch_size, "--manifest", self.manifest, *extra]

    @property
    def restored(self) -> Path:
        return self.work / "restored-check"

    def restore_args(self) -> list:
        return ["restore", self.dst, self.restored, "--key", self.key, "-q", "--manifest",
                self.manifest]

    def target_args(self, *extra) -> list:
        return self.args(*extra) if self.target == "obfuscate" else [*self.restore_args(), *extra]

    def progress(self) -> int:
        """Images finished so far by the target run."""
        if self.target == "obfuscate":
            return count_done(self.manifest)
        return sum(1 for _ in self.restored.rglob("*.png")) if self.restored.exists() else 0

    def rerun(self) -> Result:
        return run_cli(self.args())

    def rerun_target(self) -> Result:
        """Rerun the disturbed command; its exit status must be the undisturbed one."""
        res = run_cli(self.target_args())
        want = self.ref.rc if self.target == "obfuscate" else self.ref.restore_rc
        assert res.rc == want, res.err
        return res

    def prepare(self) -> None:
        """For a restore target: the undisturbed obfuscation it restores."""
        if self.target == "restore":
            assert self.rerun().rc == self.ref.rc


def one_line_error(res: Result, *words: str) -> None:
    """Exactly one ``visualmixer CMD: ...`` line naming ``words``; no traceback."""
    assert "Traceback" not in res.err, res.err
    lines = res.error_lines
    assert len(lines) == 1, res.err
    for w in words:
        assert w in lines[0], (w, lines[0])


def check_trial(t: Trial) -> dict:
    """Compare the destination with the reference; restore and compare; count losses."""
    ref = t.ref_override or t.ref
    got = tree_hashes(t.dst)
    lost = sum(1 for k, v in ref.outputs.items() if got.get(k) != v)
    extra = sorted(set(got) - set(ref.outputs))
    back = t.work / "restored-check"
    rr = run_cli(["restore", t.dst, back, "--key", t.key, "-q", "--manifest", t.manifest])
    restored = tree_hashes(back) if back.exists() else {}
    wrong = sum(1 for k, v in ref.restored.items() if restored.get(k) != v)
    temps = temp_files(t.dst, back, t.manifest.parent)
    src_now = tree_hashes(t.src)
    src_ok = src_now == (t.expect_src or tree_hashes_cache(t.ref.src))
    return {"kind": t.kind, "lost": lost, "extra": extra, "wrong_restores": wrong,
            "restore_rc": rr.rc, "restore_rc_expected": ref.restore_rc, "temps": temps,
            "src_unchanged": src_ok, "notes": t.notes}


_SRC_CACHE: dict[Path, dict[str, str]] = {}


def tree_hashes_cache(src: Path) -> dict[str, str]:
    return _SRC_CACHE.setdefault(src, tree_hashes(src))


# -- the faults -----------------------------------------------------------------------------------
def inject_sigkill(t: Trial) -> None:
    """kill -9 the run after a random number of finished images; rerun resumes."""
    _signal_run(t, signal.SIGKILL)


def inject_sigint(t: Trial) -> None:
    """Ctrl-C (SIGINT to the driver) at a random point: exit 130 and one line saying how to resume."""
    _signal_run(t, signal.SIGINT)


def _signal_run(t: Trial, sig: int) -> None:
    t.prepare()
    total = len(t.ref.done_ids)
    k = t.rng.randint(1, max(1, total * 3 // 4))
    extra = ["--workers", str(t.workers)] if t.workers > 1 else []
    proc = spawn(t.target_args(*extra), t.work)
    hit = wait_for(lambda: proc.poll() is not None or t.progress() >= k)
    sent = proc.poll() is None and hit
    at_signal = t.progress()
    if sent:
        os.kill(proc.pid, sig)
    _out, err = proc.communicate(timeout=120)
    t.notes.append(f"{signal.Signals(sig).name} to {t.target} after {at_signal} done"
                   + ("" if sent else " (run had finished: never reached)"))
    if sent and sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    elif sent and (proc.returncode == 130 or at_signal < total - 2 * t.batch_size):
        assert proc.returncode == 130, err  # the signal landed mid-run
        one_line_error(Result(proc.returncode, "", err), "interrupted", "nothing is lost",
                       f"resume with: visualmixer {t.target}")
    t.rerun_target()


def _fail_nth(monkeypatch_target, name: str, n: int, exc: OSError, when=lambda *a, **k: True):
    """Patch ``monkeypatch_target.name`` to raise ``exc`` on its n-th qualifying call."""
    real = getattr(monkeypatch_target, name)
    state = {"calls": 0, "fired": False}

    def fake(*args, **kwargs):
        if not state["fired"] and when(*args, **kwargs):
            state["calls"] += 1
            if state["calls"] == n:
                state["fired"] = True
                raise exc
        return real(*args, **kwargs)

    return real, fake, state


@contextlib.contextmanager
def patched(obj, name: str, value):
    real = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, real)


def _tmpfs_ok() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None and sys.platform == "linux"


def inject_enospc(t: Trial, *, tmpfs: bool | None = None) -> None:
    """Disk full at a random point: a small tmpfs (root) or an fsync raising ENOSPC."""
    if tmpfs is None:
        tmpfs = t.rng.random() < 0.5
    if tmpfs and t.target == "obfuscate" and _tmpfs_ok() and enospc_tmpfs(t):
        return
    t.prepare()
    done = len(t.ref.done_ids)  # obfuscate: outputs and manifest appends (2 per chunk) fsync
    calls = done + 2 * (done // t.batch_size) if t.target == "obfuscate" else done
    n = t.rng.randint(1, calls)
    _real, fake, state = _fail_nth(os, "fsync", n, OSError(errno.ENOSPC, "No space left on device"))
    with patched(os, "fsync", fake):
        res = run_cli(t.target_args())
    t.notes.append(f"fsync #{n} in {t.target} raised ENOSPC" + ("" if state["fired"] else " (never reached)"))
    if state["fired"]:
        assert res.rc == 3, res.err
        one_line_error(res, "no space left on device", "needed", "nothing is lost", "resume with:")
    t.rerun_target()


def enospc_tmpfs(t: Trial) -> bool:
    """The destination on a tmpfs of 20-80 % of the outputs' size; False if mount fails."""
    mnt = t.work / "small"
    mnt.mkdir()
    size_kb = max(8, int(t.ref.dst_bytes * t.rng.uniform(0.2, 0.8) / 1024))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        mnt.rmdir()
        return False
    try:
        real_dst = t.work / "dst"
        dst = mnt / "dst"
        args = [a if a != real_dst else dst for a in t.args()]
        res = run_cli(args)
        t.notes.append(f"tmpfs of {size_kb} kB: exit {res.rc}"
                       + ("" if res.rc == 3 else " (never reached)"))
        if res.rc == 3:
            one_line_error(res, "no space left on device", "needed", "free", "nothing is lost",
                           "resume with:")
            assert not temp_files(dst)
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        res = run_cli(args)
        assert res.rc == t.ref.rc, res.err
        shutil.copytree(dst, real_dst)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    return True


def inject_eacces(t: Trial) -> None:
    """Permission denied on creating the k-th output (what a chmod or a foreign owner gives)."""
    t.prepare()
    n = t.rng.randint(1, len(t.ref.done_ids))
    real_open = os.open
    _r, fake, state = _fail_nth(os, "open", n, PermissionError(errno.EACCES, "Permission denied"),
                                when=lambda path, *a, **k: str(path).endswith(vio.TEMP_SUFFIX))
    with patched(os, "open", fake):
        res = run_cli(t.target_args())
    assert os.open is real_open
    t.notes.append(f"open #{n} of a temp file in {t.target} raised EACCES")
    assert res.rc == 3, res.err
    one_line_error(res, "permission denied", "nothing is lost", "make it writable", "resume with:")
    t.rerun_target()


def inject_eio_read(t: Trial) -> None:
    """EIO reading 1-3 random source files: those fail with a reason, the rest is done; rerun."""
    bad = set(t.rng.sample(t.ref.done_ids, k=min(3, len(t.ref.done_ids))))
    real_open = open

    def fake_open(path, *args, **kwargs):
        p = Path(path)
        if p.is_relative_to(t.src) and p.relative_to(t.src).as_posix() in bad:
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real_open(path, *args, **kwargs)

    safe_io.open = fake_open  # module global shadows the builtin for read_source only
    try:
        res = t.rerun()
    finally:
        del safe_io.open
    t.notes.append(f"EIO on {len(bad)} source file(s)")
    assert res.rc == 1, res.err
    for image_id in bad:
        assert f"{image_id}: cannot read source file (input/output error); rerun to retry" in res.err
    res = t.rerun()
    assert res.rc == t.ref.rc, res.err


def inject_concurrent(t: Trial) -> None:
    """A second obfuscate (or a restore) while the first runs: refused at once (exit 4) naming it."""
    k = t.rng.randint(0, max(0, len(t.ref.done_ids) // 5))
    first = spawn(t.args(*(["--workers", str(t.workers)] if t.workers > 1 else [])), t.work)
    lock = t.manifest.with_name(t.manifest.name + ".lock")

    def holding() -> bool:
        if first.poll() is not None:
            return True
        try:
            return json.loads(lock.read_text()).get("pid") == first.pid and count_done(t.manifest) >= k
        except (OSError, ValueError):
            return False

    wait_for(holding)
    try:
        held = first.poll() is None and not json.loads(lock.read_text()).get("released")
    except (OSError, ValueError):
        held = False
    racing_restore = t.rng.random() < 0.3
    second = (["restore", t.dst, t.work / "race-restore", "--key", t.key, "-q", "--manifest",
               t.manifest] if racing_restore else t.args())
    res = run_cli(second)
    _out, err = first.communicate(timeout=120)
    assert first.returncode == t.ref.rc, err
    if held or res.rc == 4:
        assert res.rc == 4, res.err
        one_line_error(res, f"PID {first.pid}", "started", "only one run per destination")
        assert not (t.work / "race-restore").exists()
        t.notes.append(f"second {'restore' if racing_restore else 'obfuscate'} refused "
                       f"(first with {t.workers} worker(s))")
    else:
        t.notes.append("first run had finished before the second started (never reached)")
    res = t.rerun()
    assert res.rc == t.ref.rc, res.err
    lines = t.manifest.read_bytes().count(b'"t": "done"')
    assert lines == len(t.ref.done_ids), "two writers interleaved in the manifest"


class PowerLoss(BaseException):
    """The machine stopped: nothing after this point runs (not even error handling)."""


def inject_truncated_manifest(t: Trial) -> None:
    """Power lost mid-append: the n-th manifest append writes only a random prefix of its lines
    (maybe followed by zeros), then the process is gone; sometimes an earlier done line is
    garbled too. The rerun drops/skips them and redoes those images."""
    n = t.rng.randint(2, max(2, 2 * len(t.ref.done_ids) // t.batch_size))
    real_write = os.write
    state = {"calls": 0, "cut": None}

    def fake_write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.endswith(t.manifest.name) and state["cut"] is None:
            state["calls"] += 1
            if state["calls"] == n:
                state["cut"] = cut = t.rng.randint(1, max(1, len(data) - 1))
                real_write(fd, bytes(data[:cut]))
                raise PowerLoss
        return real_write(fd, data)

    with patched(os, "write", fake_write), contextlib.suppress(PowerLoss):
        t.rerun()
    raw = t.manifest.read_bytes()
    if state["cut"] is not None and t.rng.random() < 0.5:
        raw += b"\x00" * t.rng.randint(1, 64)  # what a journal replay can leave
    body = raw.split(b"\n")
    done_lines = [i for i, li in enumerate(body[1:-1], 1) if b'"t": "done"' in li]
    garbled = 0
    if done_lines and t.rng.random() < 0.5:
        i = t.rng.choice(done_lines)
        body[i] = b"\x00" * len(body[i])
        garbled = 1
    t.manifest.write_bytes(b"\n".join(body))
    t.notes.append(f"append #{n} cut at byte {state['cut']}" + (", one done line zeroed" if garbled else "")
                   + ("" if state["cut"] is not None else " (never reached)"))
    res = t.rerun()
    assert res.rc == t.ref.rc, res.err
    assert "Traceback" not in res.err
    if garbled:
        assert "damaged line(s) skipped" in res.err


def inject_source_replaced(t: Trial, make_ref) -> None:
    """A source image replaced by another picture, during the run or after it was done; the rerun
    redoes it: the result equals an undisturbed run over the new source."""
    victim = t.rng.choice(t.ref.done_ids)
    new = image_bytes(t.rng.randint(10**6, 10**7), "JPEG" if victim.endswith(".jpg") else "PNG")
    during = t.rng.random() < 0.5
    if during:
        proc = spawn(t.args(), t.work)
        wait_for(lambda: proc.poll() is not None or count_done(t.manifest) >= 1)
    else:
        assert t.rerun().rc == t.ref.rc
    tmp = t.src / (victim + ".swap")
    tmp.write_bytes(new)
    os.replace(tmp, t.src / victim)
    if during:
        proc.communicate(timeout=120)
    t.notes.append(f"{victim} replaced {'during' if during else 'after'} the run")
    res = t.rerun()
    assert res.rc == t.ref.rc, res.err
    t.expect_src = tree_hashes(t.src)
    t.ref_override = make_ref(t.src)


def inject_old_manifest(t: Trial) -> None:
    """A manifest of an earlier format: the committed v1 fixture restores bit-exactly; resuming a
    run whose manifest says another format version or generator is refused (exit 2, one line),
    and overwrite starts over."""
    copy = t.work / "v1"
    shutil.copytree(FIXTURE_V1, copy)
    (copy / "test.key").chmod(0o600)
    expected = json.loads((copy / "expected.json").read_text())
    for run in ("obf", "obf_rename"):
        out = t.work / f"v1-restored-{run}"
        res = run_cli(["restore", copy / run, out, "--key", copy / "test.key", "-q", "--manifest",
                       copy / f"{run}.manifest.jsonl"])
        assert res.rc == 0, res.err
        for image_id, want in expected.items():
            px = vio.read_image(out / image_id).contiguous().numpy()
            assert hashlib.sha256(px.tobytes()).hexdigest() == want["pixels_sha256"], image_id
    assert t.rerun().rc == t.ref.rc
    lines = t.manifest.read_bytes().split(b"\n")
    head = json.loads(lines[0])
    field_, value = t.rng.choice([("version", 0), ("generator", 0)])
    head[field_] = value
    lines[0] = json.dumps(head, sort_keys=True).encode()
    t.manifest.write_bytes(b"\n".join(lines))
    res = t.rerun()
    assert res.rc == 2, res.err
    one_line_error(res, "--overwrite")
    t.notes.append(f"header {field_}={value} refused; v1 fixture restored exactly")
    res = run_cli(t.args("--overwrite"))
    assert res.rc == t.ref.rc, res.err


#: Kinds whose fault may hit the restore instead of the obfuscation (a third of the trials).
RESTORE_KINDS = ("sigkill", "sigint", "enospc", "eacces")

INJECT = {
    "sigkill": inject_sigkill,
    "sigint": inject_sigint,
    "enospc": inject_enospc,
    "eacces": inject_eacces,
    "eio_read": inject_eio_read,
    "concurrent": inject_concurrent,
    "truncated_manifest": inject_truncated_manifest,
    "source_replaced": inject_source_replaced,
    "old_manifest": inject_old_manifest,
}


def fired(report: dict) -> bool:
    """Whether the trial's fault was really injected (the run had not finished first)."""
    return not any("never reached" in n for n in report["notes"])


def run_trial(kind: str, *, seed: int, base: Path, src_master: Path, key: Path, ref: Reference,
              batch_size: int, inject=None, target: str | None = None,
              workers: int | None = None) -> dict:
    """One fault of ``kind`` on a fresh copy of the corpus; returns :func:`check_trial`'s dict."""
    rng = random.Random(f"{kind}-{seed}")
    work = base / f"{kind}-{seed}"
    work.mkdir(parents=True)
    src = src_master
    if kind == "source_replaced":  # it changes the source: use a copy
        src = work / "src"
        shutil.copytree(src_master, src)
    t = Trial(kind, rng, src, key, work, ref, batch_size, workers=workers or rng.choice([1, 1, 2]))
    if kind in RESTORE_KINDS:
        t.target = target or ("restore" if rng.random() < 1 / 3 else "obfuscate")
    if kind == "source_replaced":
        t.ref = Reference(src, key, ref.outputs, ref.rc, ref.restored, ref.done_ids, restore_rc=ref.restore_rc)
        _SRC_CACHE[src] = tree_hashes_cache(src_master)

        def make_ref(new_src: Path) -> Reference:
            return make_reference(new_src, key, work / "ref-new", batch_size)

        inject_source_replaced(t, make_ref)
    else:
        (inject or INJECT[kind])(t)
    return check_trial(t)
