"""Run the VisualMixer Flower app on Flower's deployment engine, on loopback.

Starts one ``flower-superlink`` and N ``flower-supernode`` processes bound to 127.0.0.1 on free
ports chosen at run time, submits the app with ``flwr run`` to that SuperLink (a private
``FLWR_HOME`` holds the connection, so the user's Flower config is not touched), waits for the
ServerApp to finish, and always stops every process it started (also on error or Ctrl-C).
They talk TLS with throwaway credentials made for the run (:mod:`visualmixer.fl.tls`), never
``--insecure``; what that protects against, and what it does not, is in ``docs/federated.md``.

The same app runs on real machines: start ``flower-supernode --superlink HOST:PORT --node-config
"partition-id=K num-partitions=N key-path=/path/to/key"`` on each client machine and
``flwr run DIR CONNECTION`` against the real SuperLink (see ``docs/federated.md``).

The errors raised here are one line of message; the lines after the first, if any, quote a log
verbatim (the command line maps the library's names to flags in the first line only).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from visualmixer.fl import require_flwr
from visualmixer.fl.partition import parse_partition
from visualmixer.fl.tls import TLSFiles, require_cryptography, superlink_tls_args, supernode_tls_args, throwaway_tls
from visualmixer.tools.errors import signal_text

__all__ = ["FLRun", "PortInUseError", "free_port", "run_loopback", "write_app"]

HOST = "127.0.0.1"


class PortInUseError(OSError):
    """A requested port on 127.0.0.1 is already taken."""


def free_port() -> int:
    """A port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def check_port(port: int) -> int:
    """Raise :class:`PortInUseError` if ``port`` cannot be bound on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, int(port)))
        except OSError as exc:
            raise PortInUseError(f"port {port} on {HOST} is already in use; choose another or omit it "
                                 "to pick a free one") from exc
    return int(port)


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on "
                               f"{HOST}:{port}; see {log}:\n{_tail(log)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not listen on {HOST}:{port} within {timeout:.0f} s; see {log}")


def _read_log(path: Path) -> str:
    """A process log's text ("" when it cannot be read: the messages that quote it must not fail)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


#: A Flower error reply's reason, ``<class 'pkg.Kind'>:<'text'>`` (in the replies and in flwr run's log).
_REPLY_ERROR = r"<class '(?:[\w.]+\.)?(\w+)'>:<'(.*)'>"


def client_error_text(reason: str) -> str:
    """``Kind: text`` from a Flower error reply's reason (the reason itself when it has another form)."""
    m = re.fullmatch(_REPLY_ERROR, reason.strip(), flags=re.S)
    return f"{m.group(1)}: {m.group(2)}" if m else reason.strip()


def _client_errors(hist: dict, run_log: Path) -> str:
    """"; the clients reported: ..." — the distinct errors the clients sent back: those the ServerApp
    recorded in the history, else those in flwr run's log (which may lag behind the run)."""
    errors = [str(e) for e in hist.get("client_errors") or []]
    if not errors:
        found = re.findall(r"error in reply from node \d+: " + _REPLY_ERROR, _read_log(run_log))
        errors = list(dict.fromkeys(f"{kind}: {text}" for kind, text in found))
    return "; the clients reported: " + " | ".join(e.replace("\n", " ") for e in errors[:5]) if errors else ""


def _tail(path: Path, n: int = 30) -> str:
    return "\n".join(_read_log(path).splitlines()[-n:])


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def write_app(app_dir: Path, run_config: dict) -> Path:
    """Write a minimal Flower app (``pyproject.toml``) whose components live in ``visualmixer.fl``."""
    app_dir.mkdir(parents=True, exist_ok=True)
    cfg = "\n".join(f"{k} = {_toml_value(v)}" for k, v in run_config.items())
    (app_dir / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "visualmixer-fl"
version = "1.0.0"
description = "VisualMixer: federated training on locally obfuscated images"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "visualmixer"

[tool.flwr.app.components]
serverapp = "visualmixer.fl.server_app:app"
clientapp = "visualmixer.fl.client_app:app"

[tool.flwr.app.config]
{cfg}
""")
    return app_dir


@dataclass
class FLRun:
    """What :func:`run_loopback` started and produced."""

    out: Path
    history: dict = field(default_factory=dict)
    ports: dict = field(default_factory=dict)
    seconds: float = 0.0


def _bin(name: str) -> str:
    cand = Path(sys.executable).with_name(name)
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH; "
                                "install Flower: pip install 'visualmixer[fl]'")
    return found


def _descendants(roots: set[int]) -> set[int]:
    """Pids of all live descendants of ``roots`` (Linux /proc; empty elsewhere)."""
    parent: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()
    for e in entries:
        if not e.isdigit():
            continue
        try:
            with open(f"/proc/{e}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            parent[int(e)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = set(), set(roots)
    while frontier:
        kids = {pid for pid, pp in parent.items() if pp in frontier and pid not in found}
        found |= kids
        frontier = kids
    return found


def _is_serverapp(pid: int) -> bool:
    """Whether ``pid`` runs Flower's ``flwr-serverapp`` (the process that runs our ServerApp)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return any(Path(a).name == "flwr-serverapp" for a in f.read().decode(errors="replace").split("\0")[:2])
    except OSError:
        return False


def _ended(pid: int) -> str | None:
    """How a process seen alive ended ("was killed by signal 9 (SIGKILL)", "exited with code 1", "ended"),
    None while it runs. A zombie (Flower's SuperExec does not reap it) still shows its exit status."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().decode(errors="replace").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return "ended"
    if fields[0] != "Z":
        return None
    status = int(fields[49]) if len(fields) > 49 else -1  # field 52, exit_code, as waitpid reports it
    if status < 0:
        return "ended"
    if status & 0x7F:
        return f"was killed by {signal_text(status & 0x7F)}"
    return f"exited with code {status >> 8}"


def _kill_pids(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _stop(procs: list[tuple[str, subprocess.Popen]], extra: set[int], grace: float = 5.0) -> None:
    """SIGTERM what we started (and the detached Flower children seen), SIGKILL the rest after ``grace`` s.

    ``extra`` holds descendants recorded while running: Flower starts its SuperExec/app processes in
    new sessions, so they are not in our process groups and would outlive their parents.
    """
    extra = set(extra) | _descendants({p.pid for _, p in procs})
    _kill_pids(extra, signal.SIGTERM)
    for _, p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
    t_end = time.monotonic() + grace
    for _, p in procs:
        try:
            p.wait(timeout=max(0.1, t_end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for _, p in procs:
        try:  # the group also holds the ServerApp/ClientApp subprocesses Flower spawned
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
    extra |= _descendants(extra)
    _kill_pids(extra, signal.SIGKILL)


def _check_run_args(clients, rounds, partition, mode, key_paths, superlink_port, timeout) -> None:
    parse_partition(partition)
    if clients < 1 or rounds < 1:
        raise ValueError("clients and rounds must be >= 1")
    if superlink_port is not None and not 0 <= int(superlink_port) <= 65535:
        raise ValueError(f"superlink_port={superlink_port} is not a port: give 1 to 65535 (0 or None: a free one)")
    if not (math.isfinite(float(timeout)) and float(timeout) > 0):
        raise ValueError(f"timeout={timeout} is not allowed: give a number of seconds > 0")
    if mode not in ("offline", "online"):
        raise ValueError(f"mode must be 'offline' or 'online', got {mode!r}")
    if key_paths is not None and len(key_paths) != clients:
        raise ValueError("key_paths needs one key file per client")


def _pick_ports(clients: int, superlink_port: int | None) -> tuple[int, list[int]]:
    """The SuperLink's port (checked when given) and one distinct free port per SuperNode."""
    link_port = check_port(superlink_port) if superlink_port else free_port()
    node_ports = [free_port() for _ in range(clients)]
    while len(set(node_ports + [link_port])) < clients + 1:
        node_ports = [free_port() for _ in range(clients)]
    return link_port, node_ports


def _flower_env(out: Path, link_port: int, tls: TLSFiles) -> dict:
    """Environment of the Flower processes: a private FLWR_HOME naming the loopback SuperLink (TLS)."""
    flwr_home = out / "flwr-home"
    flwr_home.mkdir(exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\naddress = "{HOST}:{link_port}"\n'
        f"root-certificates = {json.dumps(str(tls.ca))}\n")
    bindir = str(Path(_bin("flower-superlink")).parent)  # Flower starts flower-superexec etc. by name
    env = {**os.environ, "FLWR_HOME": str(flwr_home), "PYTHONUNBUFFERED": "1",
           "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class _Processes:
    """The run's Flower processes, each logging to ``logs/NAME.log``; stopped (with every
    descendant seen) when the ``with`` block ends, also on SIGTERM in the main thread."""

    def __init__(self, out: Path, logs: Path, env: dict):
        self.out, self.logs, self.env = out, logs, env
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.seen: set[int] = set()
        self.apps: set[int] = set()  # the flwr-serverapp processes seen
        self._files: list = []
        self._prev_term = None

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        f = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed in __exit__
        self._files.append(f)
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=self.env, cwd=str(self.out),
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, p))
        return p

    def check_alive(self, submit: subprocess.Popen) -> str | None:
        """Raise ``RuntimeError`` when the SuperLink or a SuperNode died; say how the run's ServerApp
        process or ``flwr run`` ended, if one did (None while both run)."""
        for name, p in self.procs:
            if name != "flwr-run" and p.poll() is not None:
                log = self.logs / (name + ".log")
                raise RuntimeError(f"{name} exited with code {p.returncode}; see {log}:\n{_tail(log)}")
        found = _descendants({p.pid for _, p in self.procs})
        self.apps |= {pid for pid in found - self.apps if _is_serverapp(pid)}  # not once: exec comes after fork
        self.seen |= found
        for pid in sorted(self.apps):
            if (how := _ended(pid)) is not None:
                return f"the ServerApp process (flwr-serverapp, pid {pid}) {how}"
        if submit.poll() is not None:
            return f"flwr run exited with code {submit.returncode}"
        return None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def _on_term(signum, frame):  # SIGTERM: leave through __exit__, which stops the processes
                raise SystemExit(128 + signum)

            self._prev_term = signal.signal(signal.SIGTERM, _on_term)
        return self

    def __exit__(self, *exc) -> None:
        _stop(self.procs, self.seen)
        for f in self._files:
            f.close()
        if self._prev_term is not None:
            signal.signal(signal.SIGTERM, self._prev_term)


#: What a run leaves in ``out`` that the next run into the same folder must not pick up: the
#: SuperLink's database (it remembers the SuperNodes, live or dead), Flower's private home, results.
_STATE = ("superlink.db", "superlink.db-wal", "superlink.db-shm", "superlink.db-journal", "flwr-home",
          "history.json", "model.pt")


def _clear_state(out: Path) -> None:
    """Remove a previous run's state from ``out`` (see :data:`_STATE`)."""
    for name in _STATE:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _read_history(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):  # being written
        return {}


_END_GRACE = 2.0  #: seconds history.json may lag behind the end of the ServerApp process or flwr run


def _wait(procs: _Processes, submit: subprocess.Popen, hist_path: Path, deadline: float, timeout: float) -> dict:
    """Poll ``hist_path`` until the ServerApp records the run's end; raise ``TimeoutError`` at ``deadline``,
    ``RuntimeError`` within seconds when the ServerApp process or ``flwr run`` ended without recording it.

    A ServerApp killed from outside (SIGKILL, the out-of-memory killer) writes nothing, and ``flwr run
    --stream`` goes on until the SuperLink misses the ServerApp's heartbeats (about 50 s), then exits
    with code 0 while the SuperLink reports the run ``finished:failed``: hence the watch on the process.
    """
    run_log, logs = procs.logs / "flwr-run.log", procs.logs
    ended, ended_at = None, 0.0
    while not (hist := _read_history(hist_path)).get("finished"):
        if (now := procs.check_alive(submit)) and not ended:
            ended, ended_at = now, time.monotonic()
        if ended and time.monotonic() - ended_at > _END_GRACE:  # the ServerApp writes its end before it exits
            rounds = hist.get("rounds") or []
            where = f"after round {rounds[-1]['round']}" if rounds else "before round 0"
            hint = " (killed from outside, e.g. by the out-of-memory killer)" if "signal 9 " in ended else ""
            raise RuntimeError(f"the federated run failed: {ended}{hint} {where}, without recording the run's "
                               f"end in {hist_path}; logs in {logs}:\n{_tail(run_log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the federated run did not finish within {timeout:.0f} s; logs in {logs}:\n"
                               f"{_tail(run_log)}")
        time.sleep(0.3)
    return hist


def run_loopback(
    out: str | os.PathLike,
    *,
    clients: int = 2,
    rounds: int = 1,
    partition: str = "iid",
    target_vfe: float | None = 0.5,
    mode: str = "offline",
    train_size: int = 2000,
    test_size: int = 1000,
    local_epochs: int = 1,
    batch_size: int = 32,
    lr: float | None = None,
    seed: int = 0,
    data_root: str | None = None,
    superlink_port: int | None = None,
    timeout: float = 600.0,
    key_paths: list[str] | None = None,
    mix: int = 0, mix_share: float = 1.0, mix_balanced: bool = False,
    model: str = "cnn",
    soft_labels: str | None = None,
    soft_label_epochs: int | None = None,
    soft_label_temperature: float = 4.0, soft_label_features: float = 0.0,
    augment: Sequence[str] = (),
) -> FLRun:
    """Start SuperLink + ``clients`` SuperNodes on 127.0.0.1, run the app, stop everything.

    Writes ``out/history.json`` (per-round accuracy of the global model on obfuscated test images),
    ``out/model.pt`` and the process logs ``out/logs/*.log``; a previous run's state in ``out`` (the
    SuperLink's database, results) is removed first. Raises :class:`PortInUseError` when
    ``superlink_port`` is taken, ``TimeoutError`` after ``timeout`` seconds, ``RuntimeError`` when a
    Flower process fails. ``model`` is the shared model (one of :data:`visualmixer.fl.task.FL_MODELS`);
    ``soft_labels="region-sorted"`` has every client fit it to its own teacher's probabilities (the
    teacher trained for ``soft_label_epochs``, default ``rounds × local_epochs``, on the client's
    originals; ``soft_label_features`` > 0 also its region-grid features, with that weight);
    ``augment`` (:data:`visualmixer.train.augment.AUGMENTATIONS` names) augments every client's
    batches and its teacher's. The clients' SGD ``lr`` defaults to 0.05, 0.01 with soft labels:
    their loss (``T² · KL`` at T = 4) takes steps up to T times larger than cross-entropy's at the
    start, and at 0.05 it diverged.
    """
    require_flwr()
    require_cryptography()
    _check_run_args(clients, rounds, partition, mode, key_paths, superlink_port, timeout)
    out = Path(out).resolve()
    hist_path = out / "history.json"
    run_config = {
        "num-rounds": int(rounds), "num-clients": int(clients), "partition": partition,
        "target-vfe": -1.0 if target_vfe is None else float(target_vfe), "mode": mode,
        "train-size": int(train_size), "test-size": int(test_size), "local-epochs": int(local_epochs),
        "batch-size": int(batch_size), "lr": float(lr if lr is not None else 0.01 if soft_labels else 0.05),
        "seed": int(seed), "data-root": data_root or "",
        "out-json": str(hist_path), "out-model": str(out / "model.pt"), "round-timeout": float(timeout),
        "mix": int(mix), "mix-share": float(mix_share), "mix-balanced": bool(mix_balanced),
        "model": model, "soft-labels": soft_labels or "",
        "soft-label-epochs": int(soft_label_epochs or rounds * local_epochs),
        "soft-label-temperature": float(soft_label_temperature), "soft-label-features": float(soft_label_features),
        "augment": ",".join(augment),
    }
    from visualmixer.fl.task import FLConfig

    FLConfig.from_run_config(run_config)  # refuse bad options before anything is written or started
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _clear_state(out)
    link_port, node_ports = _pick_ports(clients, superlink_port)
    app_dir = write_app(out / "app", run_config)
    t0 = time.monotonic()
    deadline = t0 + timeout
    run_log = logs / "flwr-run.log"
    with throwaway_tls(HOST) as tls, _Processes(out, logs, _flower_env(out, link_port, tls)) as procs:
        link = procs.start("superlink", [  # TLS on all its APIs (Fleet, Control, Runtime), with the run's key
            _bin("flower-superlink"), *superlink_tls_args(tls), "--host", HOST, "--port", str(link_port),
            "--disable-runtime-dependency-installation", "--database", str(out / "superlink.db")])
        _wait_listening(link_port, link, min(60.0, timeout), "flower-superlink", logs / "superlink.log")
        for k in range(clients):
            nc = f"partition-id={k} num-partitions={clients}"
            if data_root:
                nc += f' data-root="{data_root}"'
            if key_paths:
                nc += f' key-path="{key_paths[k]}"'
            procs.start(f"supernode{k}", [  # trusts only the run's CA; its own Runtime API over TLS too
                _bin("flower-supernode"), *supernode_tls_args(tls), "--superlink", f"{HOST}:{link_port}",
                "--host", HOST, "--port", str(node_ports[k]), "--node-config", nc])
        submit = procs.start("flwr-run", [_bin("flwr"), "run", str(app_dir), "loopback", "--stream"])
        hist = _wait(procs, submit, hist_path, deadline, timeout)
    if hist.get("error"):
        error = " ".join(str(hist["error"]).split())  # one line: the message, not a log
        raise RuntimeError(f"the federated run failed: {error}{_client_errors(hist, run_log)}; logs in {logs}")
    return FLRun(out=out, history=hist, ports={"superlink": link_port, "supernodes": node_ports},
                 seconds=time.monotonic() - t0)
