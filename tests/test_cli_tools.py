"""The dataset tools end to end: `visualmixer keygen/obfuscate/restore/vfe/show` on temp trees that
mix good files and every kind of bad file; kill -9 and resume; Dask and worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visualmixer.cli import main
from visualmixer.tools import imageio as vio
from visualmixer.tools.manifest import Manifest

try:
    from _vm_files import (
        SECRET_MAKE,
        encode,
        good_and_bad_files,
        jpeg_markers,
        png_chunk_types,
        smooth_rgb,
        tree_bytes,
        write_tree,
    )
except ImportError:  # tests/ as a package
    from ._vm_files import (
        SECRET_MAKE,
        encode,
        good_and_bad_files,
        jpeg_markers,
        png_chunk_types,
        smooth_rgb,
        tree_bytes,
        write_tree,
    )

SRC_DIR = Path(__file__).resolve().parents[1] / "src"
FILES = good_and_bad_files()
DONE = sorted(n for n, (_d, s) in FILES.items() if s == "done")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC_DIR) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _snapshot(root: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def tree(tmp_path):
    src = tmp_path / "photos"
    write_tree(src, FILES)
    key = tmp_path / "secret" / "k.key"
    key.parent.mkdir()
    assert main(["keygen", str(key), "--quiet"]) == 0
    return src, key, tmp_path


def _key_secret(key: Path) -> str:
    return key.read_text().split()[1]


def test_end_to_end_bad_files_metadata_restore(tree, capsys):
    src, key, tmp = tree
    before = _snapshot(src)
    dst = tmp / "shared" / "photos-vm"
    rc = main(["obfuscate", str(src), str(dst), "--key", str(key), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 1  # some files failed
    assert "obfuscated 10" in out and "skipped 1" in out and "failed 5" in out, out
    for name, (_data, status) in FILES.items():
        if status != "done":
            line = next(li for li in err.splitlines() if name in li)
            assert status in line and ":" in line
    # outputs: one metadata-free PNG per good file, nothing else (no README, no temp files)
    outputs = tree_bytes(dst)
    expected = {n.rsplit(".", 1)[0] + ".png" for n in DONE}
    assert set(outputs) == expected
    for data in outputs.values():
        assert png_chunk_types(data) == [b"IHDR", b"IDAT", b"IEND"]
        assert SECRET_MAKE not in data
    # EXIF rotation applied (48x64 stored, orientation 6 -> 64 rows x 48 columns)
    assert vio.read_image(dst / "modes/exif_gps_rot6.png").shape == (3, 64, 48)
    # SRC untouched, manifest next to the key and private, key never printed
    assert _snapshot(src) == before
    manifests = list(key.parent.glob("k.key.photos-vm-*.manifest.jsonl"))
    assert len(manifests) == 1 and manifests[0].stat().st_mode & 0o077 == 0
    man = Manifest.read(manifests[0])
    assert {r["id"] for r in man.done()} == set(DONE)
    assert man.records["bad/bomb.png"]["t"] == "skipped"
    secret = _key_secret(key)
    assert secret not in out + err and secret not in manifests[0].read_text()
    # obfuscated pixels are a permutation of the originals', not the originals
    for name in DONE:
        orig = vio.read_image(src / name)
        obf = vio.read_image(dst / (name.rsplit(".", 1)[0] + ".png"))
        assert not np.array_equal(orig.numpy(), obf.numpy())
        assert np.array_equal(np.sort(orig.numpy(), axis=None), np.sort(obf.numpy(), axis=None))
    # rerun: everything already done, nothing rewritten
    snap = _snapshot(dst)
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "--quiet"]) == 1
    assert _snapshot(dst) == snap
    # restore: exact original pixels (after the documented read conversions)
    back = tmp / "restored"
    rc = main(["restore", str(dst), str(back), "--key", str(key), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 1, out + err  # the files obfuscate failed or skipped are not restored
    assert "restored 10, skipped 6, failed 0" in out and "6 image(s) are not in RESTORED" in err
    for name in DONE:
        got = vio.read_image(back / (name.rsplit(".", 1)[0] + ".png"))
        assert np.array_equal(got.numpy(), vio.read_image(src / name).numpy()), name
    assert _snapshot(src) == before


def test_refusals(tree, capsys, tmp_path):
    src, key, tmp = tree
    for dst, word in ((src, "the same as SRC"), (src / "inside", "inside SRC")):
        assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q"]) == 2
        assert word in capsys.readouterr().err
    assert main(["obfuscate", str(src / "good"), str(src.parent), "--key", str(key), "-q"]) == 2
    assert "SRC" in capsys.readouterr().err
    dst = tmp / "out"
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q",
                 "--manifest", str(dst / "m.jsonl")]) == 2
    assert "--manifest" in capsys.readouterr().err
    assert not (src / "inside").exists()
    # keygen refuses to overwrite; a readable key is refused
    assert main(["keygen", str(key), "-q"]) == 2
    assert "exists" in capsys.readouterr().err
    os.chmod(key, 0o644)
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q"]) == 2
    assert "chmod 600" in capsys.readouterr().err
    os.chmod(key, 0o600)
    # an output that is not ours is never overwritten without --overwrite: the run is refused
    foreign = dst / "good" / "a.png"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"not mine")
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q"]) == 2
    assert foreign.read_bytes() == b"not mine"
    err = capsys.readouterr().err
    assert "already holds 1 image file(s) that this run's manifest does not record" in err
    assert "--overwrite" in err
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q", "--overwrite"]) == 1
    assert foreign.read_bytes() != b"not mine"
    # resuming with other options is refused
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q", "--target-vfe", "0.7"]) == 2
    assert "made with --target-vfe 0.5" in capsys.readouterr().err
    # restoring into the original SRC is refused
    assert main(["restore", str(dst), str(src / "back"), "--key", str(key), "-q"]) == 2
    assert "inside the original SRC" in capsys.readouterr().err
    assert not (src / "back").exists()
    # a bad --dask address is refused before anything is written
    other = tmp / "other"
    assert main(["obfuscate", str(src), str(other), "--key", str(key), "-q", "--dask", "udp://x"]) == 2
    assert "--dask" in capsys.readouterr().err and not other.exists()
    assert not list(key.parent.glob("*other*"))
    # bad option values name the option
    with pytest.raises(SystemExit):
        main(["obfuscate", str(src), str(dst), "--key", str(key), "--target-vfe", "1.5"])
    assert "--target-vfe" in capsys.readouterr().err


def test_rename_and_format_same(tree, capsys):
    src, key, tmp = tree
    dst = tmp / "renamed"
    assert main(["obfuscate", str(src / "good"), str(dst), "--key", str(key), "-q", "--rename",
                 "--format", "same"]) == 0
    out, err = capsys.readouterr()
    assert "restore cannot give the exact pixels" in err
    names = sorted(p.name for p in dst.iterdir())
    assert len(names) == 4 and not any(n.split(".")[0] in ("a", "b", "grey", "odd") for n in names)
    assert all(len(n.split(".")[0]) == 24 for n in names)
    jpgs = [p for p in dst.iterdir() if p.suffix == ".jpg"]
    assert len(jpgs) == 1 and 0xE1 not in jpeg_markers(jpgs[0].read_bytes())
    back = tmp / "back"
    assert main(["restore", str(dst), str(back), "--key", str(key), "-q"]) == 0
    assert "close to, not equal" in capsys.readouterr().err
    got = vio.read_image(back / "a.png")
    assert np.array_equal(got.numpy(), vio.read_image(src / "good/a.png").numpy())
    assert (back / "b.png").exists()  # approximate (JPEG), still restored


def _many(root: Path, n: int, size: int = 64) -> None:
    for i in range(n):
        folder = root / f"class{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_rgb(size, size, i)).save(folder / f"img{i:04d}.png")


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if text.encode() in cmdline and state not in (b"Z", b"X"):
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_kill_minus_9_then_resume_is_byte_identical(tmp_path):
    src = tmp_path / "src"
    # enough work (about 2 s of shuffling and encoding) that the run is still going when the
    # first records land, even when the polling test process is starved on a loaded machine
    n = 240
    _many(src, n, size=64)
    key = tmp_path / "k.key"
    assert main(["keygen", str(key), "-q"]) == 0
    ref = tmp_path / "ref"
    assert main(["obfuscate", str(src), str(ref), "--key", str(key), "-q", "--batch-size", "2",
                 "--manifest", str(tmp_path / "ref.jsonl")]) == 0
    dst = tmp_path / "dst"
    man = tmp_path / "dst.jsonl"
    cmd = [sys.executable, "-m", "visualmixer", "obfuscate", str(src), str(dst), "--key", str(key),
           "-q", "--batch-size", "2", "--manifest", str(man), "--workers", "2"]
    proc = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        if man.exists() and man.read_bytes().count(b'"t": "done"') >= 1:
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.005)
    proc.communicate(timeout=60)
    assert killed, "the run finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    # its worker processes (forked by a fork server whose command line names tmp_path) exit too
    deadline = time.monotonic() + 20
    while _processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_mentioning(str(tmp_path))
    partial = Manifest.read(man)
    assert 0 < len(partial.done()) < n
    # no half-written file under a final name
    for path in dst.rglob("*.png"):
        assert vio.read_image(path).shape == (3, 64, 64)
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q", "--batch-size", "2",
                 "--manifest", str(man)]) == 0
    assert tree_bytes(dst) == tree_bytes(ref)
    assert len(Manifest.read(man).done()) == n


def test_simulated_crash_states_resume(tree):
    src, key, tmp = tree
    dst, man = tmp / "d", tmp / "d.jsonl"
    args = ["obfuscate", str(src / "good"), str(dst), "--key", str(key), "-q", "--manifest", str(man)]
    assert main(args) == 0
    ref = tree_bytes(dst)
    # crash after the pending record, during the write: output missing, temp file left, line cut
    (dst / "grey.png").unlink()
    (dst / ".grey.png.deadbeef.vmtmp").write_bytes(b"half")
    with open(man, "ab") as fh:
        fh.write(json.dumps({"t": "pending", "id": "grey.png", "out": "grey.png"}).encode() + b"\n")
        fh.write(b'{"t": "done", "id": "grey.p')
    # crash after the write, before the done record: the output is ours and is redone
    lines = man.read_bytes().split(b"\n")
    a_done = next(n for n, li in enumerate(lines) if b'"id": "a.png"' in li and b'"done"' in li)
    lines[a_done] = json.dumps({"t": "pending", "id": "a.png", "out": "a.png"}).encode()
    man.write_bytes(b"\n".join(lines))
    (dst / "a.png").write_bytes(b"half-written by a dead run")
    assert main(args) == 0
    assert tree_bytes(dst) == ref


def test_workers_and_dask_local_equal_single_process(tree):
    pytest.importorskip("distributed")
    src, key, tmp = tree
    runs = {}
    for name, extra in (("single", []), ("workers", ["--workers", "2"]), ("dask", ["--dask", "local"])):
        dst = tmp / name
        rc = main(["obfuscate", str(src), str(dst), "--key", str(key), "-q", "--batch-size", "4",
                   "--manifest", str(tmp / f"{name}.jsonl"), *extra])
        assert rc == 1  # the bad files fail the same way everywhere
        runs[name] = (tree_bytes(dst), {
            i: (r["t"], r.get("plan"), r.get("vfe"), r.get("reason"))
            for i, r in Manifest.read(tmp / f"{name}.jsonl").records.items()
        })
    assert runs["workers"] == runs["single"]
    assert runs["dask"] == runs["single"]


def test_dask_local_admits_no_process_without_its_credentials(tmp_path):
    """The local cluster gets the master key (scattered to its workers); loopback is open to every
    user of the machine, so it speaks TLS with credentials made for the run: a client without
    them (another user's process) cannot connect and take the key or run code as the owner."""
    dd = pytest.importorskip("distributed")
    import socket
    import ssl

    from visualmixer.tools.distributed import dask_client

    def handshake(port: int, cert: str | None = None) -> None:
        """A TLS 1.2 client that trusts any server (the client-certificate check ends the handshake)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if cert:
            ctx.load_cert_chain(cert)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw):
            pass

    with dask_client("local") as client:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:") and client.security.require_encryption
        with pytest.raises(OSError):  # plain TCP: the scheduler drops it (distributed's CommClosedError)
            dd.Client(address.replace("tls://", "tcp://", 1), timeout=5, security=dd.Security())
        with pytest.raises(TypeError, match="TLS expects a `ssl_context`"):  # TLS needs credentials
            dd.Client(address, timeout=5, security=dd.Security())
        with pytest.raises(OSError, match="TLS certificate does not match"):  # credentials of its own
            dd.Client(address, timeout=5, security=dd.Security.temporary())
        # the scheduler itself refuses a TLS client without a certificate of the run's CA; the same
        # client with the run's certificate gets through (so the refusal is the certificate's)
        port = int(address.rsplit(":", 1)[1])
        with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
            handshake(port)
        own = tmp_path / "run-client.pem"
        fd = os.open(own, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(client.security.tls_client_cert + "\n" + client.security.tls_client_key)
        handshake(port, str(own))


def test_restore_compares_keyed_checksums_in_constant_time(tree, monkeypatch):
    """Restore checks each image against its keyed checksum with hmac.compare_digest."""
    import hmac

    src, key, tmp = tree
    dst = tmp / "vm"
    assert main(["obfuscate", str(src), str(dst), "--key", str(key), "-q", "--manifest", str(tmp / "m.jsonl")]) == 1
    compared = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    assert main(["restore", str(dst), str(tmp / "back"), "--key", str(key), "-q", "--manifest",
                 str(tmp / "m.jsonl")]) == 1  # (the files obfuscate failed are not restored)
    assert len(compared) >= len(DONE) and all(len(a) == len(b) == 32 for a, b in compared)


def test_vfe_and_show_commands(tree, capsys):
    src, key, tmp = tree
    assert main(["vfe", str(src / "good"), "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["count"] == 4 and all(0 <= r["vfe"] <= 1.5 for r in report["images"])
    assert main(["vfe", str(src / "bad" / "empty.png"), str(src / "good" / "a.png"), "--csv"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "path,height,width,channels,vfe" and "empty file" in err
    assert main(["vfe", str(src / "good" / "a.png")]) == 0
    assert "1 image(s): mean" in capsys.readouterr().out
    grid = tmp / "grid.png"
    assert main(["show", str(src / "good" / "a.png"), "-o", str(grid), "--target-vfe", "0.4", "0.8",
                 "--key", str(key)]) == 0
    im = Image.open(grid)
    assert im.size[0] > 3 * im.size[1] // 2 and png_chunk_types(grid.read_bytes())[-1] == b"IEND"
    assert main(["show", str(src / "good" / "a.png"), "-o", str(grid)]) == 2  # no overwrite


@pytest.mark.parametrize("command", ["keygen", "obfuscate", "restore", "vfe", "show"])
def test_help_explains_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"visualmixer {command}" in text


def test_encode_helper_sanity():
    assert encode(Image.fromarray(smooth_rgb(4, 4)), "PNG")[:4] == b"\x89PNG"
