"""`visualmixer fl` failures: flags refused before anything starts, a ServerApp that fails at start-up,
the clients' own errors, a re-run into the same folder, log excerpts quoted verbatim."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

HAS_FLWR = importlib.util.find_spec("flwr") is not None
FMNIST = Path(os.environ.get("VISUALMIXER_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
HAS_FMNIST = any(FMNIST.glob("train-images-idx3-ubyte*"))
needs_flwr = pytest.mark.skipif(not HAS_FLWR, reason="flwr not installed")


@pytest.fixture
def no_run(monkeypatch):
    """``run_loopback`` replaced: records its keyword arguments, starts nothing."""
    from visualmixer.fl import deploy

    seen: dict = {}

    def fake(out, **kw):
        seen.update(kw, out=out)
        return deploy.FLRun(out=Path(out), history={"rounds": []})

    monkeypatch.setattr(deploy, "run_loopback", fake)
    return seen


# -- flags ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, says", [
    ("--superlink-port", "70000", "expected a port from 1 to 65535, got 70000"),
    ("--superlink-port", "-1", "expected a port from 1 to 65535, got -1"),
    ("--superlink-port", "0", "expected a port from 1 to 65535, got 0"),
    ("--lr", "-1", "expected a finite number > 0, got '-1'"),
    ("--lr", "0", "expected a finite number > 0, got '0'"),
    ("--lr", "nan", "expected a finite number > 0, got 'nan'"),
    ("--lr", "inf", "expected a finite number > 0, got 'inf'"),
    ("--train-size", "-5", "expected a number of images >= 0 (0: all), got -5"),
    ("--test-size", "-3", "expected a number of images >= 0 (0: all), got -3"),
    ("--timeout", "0", "expected a finite number > 0, got '0'"),
    ("--timeout", "-5", "expected a finite number > 0, got '-5'"),
    ("--timeout", "nan", "expected a finite number > 0, got 'nan'"),
    ("--data-root", "/nonexistent/fashion-mnist", "'/nonexistent/fashion-mnist' is not a directory"),
])
def test_bad_flags_are_usage_errors_naming_the_flag(flag, value, says, tmp_path, no_run, capsys):
    from visualmixer.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["fl", flag, value, "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert f"visualmixer fl: error: argument {flag}: {says}" in capsys.readouterr().err
    assert no_run == {} and not (tmp_path / "x").exists()  # nothing started, nothing written


def test_good_flags_reach_the_run(tmp_path, no_run):
    from visualmixer.cli import main

    assert main(["fl", "--superlink-port", "65535", "--lr", "1e-3", "--train-size", "0", "--test-size", "1",
                 "--timeout", "0.5", "--data-root", str(tmp_path), "--out", str(tmp_path / "x")]) == 0
    assert (no_run["superlink_port"], no_run["lr"], no_run["train_size"], no_run["test_size"], no_run["timeout"],
            no_run["data_root"]) == (65535, 1e-3, 0, 1, 0.5, str(tmp_path))


@pytest.mark.parametrize("rc, says", [
    ({"lr": float("nan")}, "lr=nan is not allowed: give a finite number > 0"),
    ({"lr": -1.0}, "lr=-1.0 is not allowed"),
    ({"train-size": -5}, "train_size=-5 is not allowed: give an integer >= 0 (0: all)"),
    ({"test-size": -3}, "test_size=-3 is not allowed"),
    ({"batch-size": 0}, "batch_size=0 is not allowed: give an integer >= 1"),
    ({"local-epochs": 0}, "local_epochs=0 is not allowed"),
])
def test_run_config_refuses_bad_numbers(rc, says):
    from visualmixer.fl.task import FLConfig

    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        FLConfig.from_run_config(rc)


@needs_flwr
@pytest.mark.parametrize("kw, says", [
    ({"superlink_port": 70000}, "superlink_port=70000 is not a port"),
    ({"timeout": 0}, "timeout=0 is not allowed"),
    ({"lr": float("nan")}, "lr=nan is not allowed"),
    ({"test_size": -3}, "test_size=-3 is not allowed"),
])
def test_run_loopback_refuses_bad_numbers_before_anything_starts(kw, says, tmp_path):
    from visualmixer.fl.deploy import run_loopback

    small = {"clients": 1, "train_size": 100, "test_size": 50, "timeout": 20}  # should the check go: bounded
    with pytest.raises(ValueError, match=says):
        run_loopback(tmp_path / "x", **{**small, **kw})
    assert not (tmp_path / "x").exists()


# -- the ServerApp's failures are recorded, so that the deployment stops waiting -----------------

def _server_main(tmp_path, **rc):
    from visualmixer.fl import server_app

    out_json = tmp_path / "history.json"
    context = SimpleNamespace(run_config={"out-json": str(out_json), "num-clients": 1, "num-rounds": 1, **rc})
    return server_app.main, context, out_json


@needs_flwr
def test_server_app_records_a_start_up_failure(tmp_path):
    """The test set cannot be read: history.json says so at once (before, it stayed unwritten)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    main, context, out_json = _server_main(tmp_path, **{"data-root": str(empty), "test-size": 50})
    with pytest.raises(FileNotFoundError):
        main(grid=None, context=context)
    hist = json.loads(out_json.read_text())
    assert hist["finished"] is True
    assert hist["error"].startswith("FileNotFoundError: Fashion-MNIST test files")
    assert hist["error"].endswith("(at start-up, before round 0)")


@needs_flwr
def test_server_app_records_a_bad_run_config(tmp_path):
    main, context, out_json = _server_main(tmp_path, **{"test-size": -3})
    with pytest.raises(ValueError, match="test_size=-3"):
        main(grid=None, context=context)
    assert json.loads(out_json.read_text())["error"].startswith("ValueError: test_size=-3 is not allowed")


@needs_flwr
def test_server_keeps_the_clients_errors_and_stops_at_a_round_without_an_update():
    """The error replies are kept in the history (the streamed log may not have them yet); a round
    without an update ends the run there."""
    from flwr.app import Error, Message, Metadata

    from visualmixer.fl import server_app

    def failed(node: int, reason: str) -> Message:
        md = Metadata(run_id=1, message_id="m", src_node_id=node, dst_node_id=0, reply_to_message_id="x",
                      group_id="1", created_at=time.time(), ttl=60.0, message_type="train")
        return Message(error=Error(code=0, reason=reason), metadata=md)

    nan = ("<class 'visualmixer.train.fit.TrainingDiverged'>:<'training loss became nan at epoch 1, step 2 "
           "(client SGD at lr=nan): try a lower lr'>")
    history: dict = {}
    strategy = server_app._FedAvg(history, fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=2,
                                  min_evaluate_nodes=0, min_available_nodes=2)
    with pytest.raises(RuntimeError, match=r"no client sent an update \(in round 3: all 3 clients replied"):
        strategy.aggregate_train(3, iter([failed(1, nan), failed(2, nan), failed(3, "odd")]))
    assert history["client_errors"] == [
        "TrainingDiverged: training loss became nan at epoch 1, step 2 (client SGD at lr=nan): try a lower lr", "odd"]
    # the run ends at this round (FedAvg alone kept the model and went on), with its error in the history
    assert history["error"] == "no client sent an update (in round 3: all 3 clients replied with an error)"
    with pytest.raises(RuntimeError, match=r"\(in round 1: no client replied\)"):
        server_app._FedAvg({}).aggregate_train(1, iter([]))


def test_the_run_names_the_clients_errors_from_the_history(tmp_path):
    from visualmixer.fl.deploy import _client_errors

    log = tmp_path / "flwr-run.log"
    log.write_text("INFO: [ROUND 1/1]\n")  # the log streamed so far: no error lines yet
    hist = {"client_errors": ["TrainingDiverged: training loss became nan (client SGD at lr=nan)"]}
    assert _client_errors(hist, log) == \
        "; the clients reported: TrainingDiverged: training loss became nan (client SGD at lr=nan)"
    log.write_text("\t> Received error in reply from node 7: <class 'x.Boom'>:<'it broke'>\n")
    assert _client_errors({}, log) == "; the clients reported: Boom: it broke"
    assert _client_errors({}, tmp_path / "missing.log") == ""


# -- log excerpts are quoted as they are --------------------------------------------------------

@pytest.mark.parametrize("error", [TimeoutError, RuntimeError])
def test_log_excerpts_are_quoted_verbatim(error, tmp_path, monkeypatch, capsys):
    from visualmixer.cli import main
    from visualmixer.fl import deploy

    excerpt = "INFO:  \t├── ArrayRecord key: 'arrays'\nINFO:  \t└── ConfigRecord key: 'config'"

    def fails(out, **kw):
        raise error(f"the federated run did not finish (lr=0.5); logs in {out}/logs:\n{excerpt}")

    monkeypatch.setattr(deploy, "run_loopback", fails)
    assert main(["fl", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"visualmixer fl: error: the federated run did not finish (--lr 0.5); logs in {tmp_path}/logs:\n" in err
    assert excerpt in err


# -- a re-run into the same folder starts afresh ------------------------------------------------

@needs_flwr
def test_a_rerun_does_not_pick_up_the_last_runs_state(tmp_path, monkeypatch):
    """The SuperLink's database remembers the last run's SuperNodes: it is gone before anything starts."""
    from visualmixer.fl import deploy

    stale = ["superlink.db", "superlink.db-wal", "superlink.db-shm", "history.json", "model.pt",
             "flwr-home/apps/old/pyproject.toml"]
    for name in stale:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("from the last run")
    present: list[str] = []

    class Started(Exception):
        pass

    def start(self, name, argv):
        present.extend(n for n in stale if (tmp_path / n).exists())
        raise Started

    monkeypatch.setattr(deploy._Processes, "start", start)
    with pytest.raises(Started):
        deploy.run_loopback(tmp_path, clients=1, rounds=1)
    assert present == []
    assert (tmp_path / "flwr-home" / "config.toml").is_file()  # the new run's own


# -- end to end: a ServerApp that cannot start ends the run at once -----------------------------

@pytest.mark.slow
@needs_flwr
@pytest.mark.skipif(not HAS_FMNIST, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_a_server_that_fails_at_start_up_ends_the_run_at_once(tmp_path, capsys):
    from visualmixer.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    t0 = time.monotonic()
    assert main(["fl", "--clients", "1", "--rounds", "1", "--train-size", "100", "--test-size", "50",
                 "--data-root", str(empty), "--timeout", "120", "--out", str(tmp_path / "run")]) == 1
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    assert "visualmixer fl: error: the federated run failed: FileNotFoundError: Fashion-MNIST test files" in err
    assert "(at start-up, before round 0)" in err
    assert "did not finish within" not in err  # ended by the error, not by --timeout (times are never asserted)
    print(f"server start-up failure reported after {elapsed:.1f} s")


# -- a ServerApp process that dies without a word ends the run within seconds ------------------

def test_how_a_process_ended_is_read_from_its_zombie():
    """Flower's SuperExec leaves a dead ServerApp as a zombie: its exit status is still there."""
    import signal
    import subprocess
    import sys

    from visualmixer.fl.deploy import _ended

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    quitter = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    try:
        assert _ended(sleeper.pid) is None
        sleeper.kill()
        t_end = time.monotonic() + 10
        while (_ended(sleeper.pid) is None or _ended(quitter.pid) is None) and time.monotonic() < t_end:
            time.sleep(0.05)
        assert _ended(sleeper.pid) == f"was killed by signal {int(signal.SIGKILL)} (SIGKILL)"
        assert _ended(quitter.pid) == "exited with code 3"
    finally:
        sleeper.kill()
        sleeper.wait()
        quitter.wait()
    assert _ended(sleeper.pid) == "ended"  # reaped: gone


@pytest.mark.slow
@needs_flwr
@pytest.mark.skipif(not HAS_FMNIST, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_a_server_app_killed_from_outside_ends_the_run_naming_its_signal(tmp_path, capsys):
    """SIGKILL to the ServerApp (as the out-of-memory killer sends it) after round 0: history.json never
    says ``finished``, ``flwr run --stream`` goes on for about 50 s; the run ends within seconds all the
    same, saying what happened, and leaves no process behind."""
    import signal
    import threading

    from visualmixer.cli import main
    from visualmixer.fl.deploy import _descendants, _ended, _is_serverapp

    out = tmp_path / "run"
    seen: set[int] = set()
    killed: list[tuple[int, float]] = []
    stop = threading.Event()
    # children this test process had before the run (a multiprocessing fork server or resource
    # tracker that earlier tests in the same process started) are not the run's
    earlier = _descendants({os.getpid()})

    def killer():
        while not stop.is_set():
            found = _descendants({os.getpid()}) - earlier
            seen.update(found)
            apps = [pid for pid in found if _is_serverapp(pid)]
            if apps and not killed and (out / "history.json").exists():  # round 0 recorded
                os.kill(apps[0], signal.SIGKILL)
                killed.append((apps[0], time.monotonic()))
            time.sleep(0.1)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    try:
        code = main(["fl", "--clients", "1", "--rounds", "50", "--train-size", "100", "--test-size", "50",
                     "--timeout", "90", "--out", str(out)])
    finally:
        stop.set()
        watcher.join(5)
    assert killed, "the ServerApp process was never seen"
    pid, t_kill = killed[0]
    after = time.monotonic() - t_kill
    err = capsys.readouterr().err
    assert code == 1
    assert (f"visualmixer fl: error: the federated run failed: the ServerApp process (flwr-serverapp, pid {pid}) "
            "was killed by signal 9 (SIGKILL) (killed from outside, e.g. by the out-of-memory killer) after round"
            ) in err
    assert f"without recording the run's end in {out / 'history.json'}; logs in {out / 'logs'}" in err
    # ended by the watch on the ServerApp process (the message names it and its signal, above), not
    # when flwr run gives up (~50 s) nor at --timeout; the delay (about 3 s) is reported, never asserted
    assert "did not finish within" not in err, err
    t_end = time.monotonic() + 5  # a process killed a moment ago may take a little while to go
    while [p for p in seen if _ended(p) is None] and time.monotonic() < t_end:
        time.sleep(0.1)
    assert [p for p in sorted(seen) if _ended(p) is None] == []  # every process is gone (or a zombie)
    print(f"killed ServerApp reported {after:.1f} s after the kill")
