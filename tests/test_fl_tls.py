"""`visualmixer fl` on loopback speaks TLS with throwaway credentials made for the run: the commands
carry the TLS flags and never ``--insecure``, the key stays private and goes at the end, and the live
SuperLink and SuperNodes refuse a plain (unencrypted) client."""

from __future__ import annotations

import importlib.util
import os
import socket
import ssl
import stat
import threading
import time
from pathlib import Path

import pytest

HAS_FLWR = importlib.util.find_spec("flwr") is not None
HAS_CRYPTOGRAPHY = importlib.util.find_spec("cryptography") is not None
needs_flwr = pytest.mark.skipif(not (HAS_FLWR and HAS_CRYPTOGRAPHY), reason="flwr or cryptography not installed")
needs_cryptography = pytest.mark.skipif(not HAS_CRYPTOGRAPHY, reason="cryptography not installed")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _plain_http_reply(port: int, timeout: float = 5.0) -> bytes:
    """What 127.0.0.1:``port`` answers to a plain-text HTTP request (b"" when it just closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        try:
            return s.recv(64)
        except (ConnectionResetError, TimeoutError):
            return b""


def _tls_http_reply(port: int, ca: Path, timeout: float = 10.0) -> tuple[bytes, dict]:
    """The first bytes of an HTTPS reply from 127.0.0.1:``port``, verified against ``ca``, and the
    server's certificate."""
    ctx = ssl.create_default_context(cafile=str(ca))  # hostname checked against the IP SAN
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return s.recv(64), s.getpeercert()


# -- the credentials ---------------------------------------------------------------------------

@needs_cryptography
def test_throwaway_credentials_are_private_verify_for_127_0_0_1_and_go_at_the_end(tmp_path):
    from cryptography import x509

    from visualmixer.fl.tls import throwaway_tls

    with throwaway_tls("127.0.0.1") as tls:
        folder, ca_pem = tls.folder, tls.ca.read_bytes()
        assert _mode(folder) == 0o700
        assert sorted(p.name for p in folder.iterdir()) == ["ca.pem", "server.key", "server.pem"]  # no CA key
        assert {_mode(p) for p in (tls.ca, tls.cert, tls.key)} == {0o600}
        cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        # a real handshake, the client trusting only the run's CA (strict X.509 checks where Python has them)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(tls.cert, tls.key)
        with socket.create_server(("127.0.0.1", 0)) as srv:
            def serve():
                conn, _ = srv.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as s:
                    s.sendall(b"ok")

            t = threading.Thread(target=serve, daemon=True)
            t.start()
            ctx = ssl.create_default_context(cafile=str(tls.ca))
            ctx.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
            with socket.create_connection(srv.getsockname(), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                assert s.recv(2) == b"ok"
            t.join(10)
    assert not folder.exists()
    with throwaway_tls("127.0.0.1") as other:
        assert other.ca.read_bytes() != ca_pem  # a new CA for every run


def test_without_cryptography_the_run_names_the_extra_before_anything_starts(tmp_path, monkeypatch):
    import sys

    from visualmixer.core.optional import MissingExtraError
    from visualmixer.fl.tls import require_cryptography

    for name in [n for n in sys.modules if n == "cryptography" or n.startswith("cryptography.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography", None)  # `import cryptography` now raises ImportError
    with pytest.raises(MissingExtraError, match=r"visualmixer\[fl\]"):
        require_cryptography()
    if HAS_FLWR:
        from visualmixer.fl.deploy import run_loopback

        # Flower itself needs cryptography: FlowerMissingError when flwr is not imported yet, else ours
        with pytest.raises(ImportError, match=r"visualmixer\[fl\]"):
            run_loopback(tmp_path / "run", clients=1, rounds=1)
        assert not (tmp_path / "run").exists()  # nothing was written or started


# -- the commands the run builds ----------------------------------------------------------------

@needs_flwr
@pytest.mark.parametrize("fail", [False, True])
def test_every_flower_process_is_started_with_tls_and_the_key_never_lands_in_out(fail, tmp_path, monkeypatch):
    """No ``--insecure`` anywhere; the SuperLink serves with the run's key, the SuperNodes and ``flwr run``
    trust only the run's CA; the credentials are private while the run lasts and gone after it, also
    when it fails."""
    from visualmixer.fl import deploy

    started: dict[str, list[str]] = {}
    during: dict = {}

    class FakeProcess:
        pid, returncode = 0, None

        def poll(self):
            return None

    def start(self, name, argv):
        started[name] = [str(a) for a in argv]
        return FakeProcess()

    def wait(procs, submit, hist_path, deadline, timeout):
        during["config"] = (tmp_path / "flwr-home" / "config.toml").read_text()
        if "--ssl-ca-certfile" in started["superlink"]:
            folder = Path(_flag(started["superlink"], "--ssl-ca-certfile")).parent
            during.update(folder=folder, folder_mode=_mode(folder), modes={p.name: _mode(p) for p in folder.iterdir()})
        if fail:
            raise RuntimeError("the run failed")
        return {"finished": True, "rounds": []}

    monkeypatch.setattr(deploy._Processes, "start", start)
    monkeypatch.setattr(deploy, "_wait_listening", lambda *a, **k: None)
    monkeypatch.setattr(deploy, "_wait", wait)
    if fail:
        with pytest.raises(RuntimeError, match="the run failed"):
            deploy.run_loopback(tmp_path, clients=2, rounds=1)
    else:
        deploy.run_loopback(tmp_path, clients=2, rounds=1)

    assert sorted(started) == ["flwr-run", "superlink", "supernode0", "supernode1"]
    assert not any("--insecure" in argv for argv in started.values())
    link = started["superlink"]
    ca, cert, key = (Path(_flag(link, f)) for f in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"))
    for k in (0, 1):
        node = started[f"supernode{k}"]
        assert _flag(node, "--root-certificates") == str(ca)  # trusts the run's CA only
        assert [_flag(node, f) for f in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile")] == \
            [str(ca), str(cert), str(key)]  # its own Runtime API (for its ClientApp) over TLS too
    assert f'root-certificates = "{ca}"' in during["config"] and "insecure" not in during["config"]
    assert tmp_path not in during["folder"].parents  # not in the output folder a user may publish
    assert during["folder_mode"] == 0o700
    assert during["modes"] == {"ca.pem": 0o600, "server.pem": 0o600, "server.key": 0o600}
    assert not during["folder"].exists()  # removed when the run ended
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert leaked == []


# -- end to end: the live SuperLink and SuperNodes refuse a plain client -------------------------

@pytest.mark.slow
@needs_flwr
def test_the_live_superlink_and_supernodes_refuse_a_plain_client(tmp_path, monkeypatch):
    """While the run's processes are up, a plain-text HTTP request to the SuperLink's port or to a
    SuperNode's port gets no HTTP answer, and the same request over TLS, trusting the run's CA, does (so
    the port is live and speaking TLS with a certificate for 127.0.0.1). Bounded: each probe has a
    timeout, the whole check a deadline."""
    from visualmixer.fl import deploy

    seen: dict = {}

    def probe(procs, submit, hist_path, deadline, timeout):
        argv = {name: [str(a) for a in p.args] for name, p in procs.procs}
        ports = [int(_flag(argv["superlink"], "--port"))] + [
            int(_flag(a, "--port")) for name, a in argv.items() if name.startswith("supernode")]
        for name, p in procs.procs:  # the SuperNodes' Runtime APIs come up a moment after they start
            if name.startswith("supernode"):
                deploy._wait_listening(int(_flag(argv[name], "--port")), p, 60.0, name, procs.logs / f"{name}.log")
        seen["plain"] = {port: _plain_http_reply(port) for port in ports}
        seen["superexec"] = []  # the SuperExec processes the SuperLink and SuperNodes start, by their argv
        for pid in deploy._descendants({p.pid for _, p in procs.procs}):
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any(Path(a).name == "flower-superexec" for a in args[:2]):
                seen["superexec"].append(args)
        if "--ssl-ca-certfile" in argv["superlink"]:
            ca = Path(_flag(argv["superlink"], "--ssl-ca-certfile"))
            seen["tls"] = {port: _tls_http_reply(port, ca) for port in ports}
        return {"finished": True, "rounds": []}

    monkeypatch.setattr(deploy, "_wait", probe)
    t0 = time.monotonic()
    deploy.run_loopback(tmp_path, clients=1, rounds=1, timeout=120)
    assert len(seen["plain"]) == 2
    for port, reply in seen["plain"].items():
        assert not reply.startswith(b"HTTP/"), (port, reply)
    assert seen["superexec"], "no flower-superexec process seen"
    for args in seen["superexec"]:  # Flower hands the run's CA on to the processes it starts
        assert "--insecure" not in args and "--root-certificates" in args, args
    assert len(seen["tls"]) == 2
    for port, (reply, cert) in seen["tls"].items():
        assert reply.startswith(b"HTTP/"), (port, reply)
        assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
    print(f"TLS probes of the live processes done in {time.monotonic() - t0:.1f} s")
