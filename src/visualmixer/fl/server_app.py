"""Flower ServerApp: FedAvg over the clients; the global model is evaluated on obfuscated test images.

Run config keys (``[tool.flwr.app.config]`` / ``flwr run --run-config``): ``num-rounds``,
``num-clients``, ``partition``, ``target-vfe`` (negative = clean baseline), ``mode``, ``train-size``,
``test-size``, ``local-epochs``, ``batch-size``, ``lr``, ``seed``, ``data-root``, ``mix``, ``mix-share``,
``mix-balanced``, ``model``, ``soft-labels``, ``soft-label-epochs``, ``soft-label-temperature``, ``out-json``
(per-round accuracy written there after every round) and ``out-model``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from visualmixer.fl import require_flwr

require_flwr()

import torch  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from visualmixer.fl import task  # noqa: E402
from visualmixer.fl.deploy import client_error_text  # noqa: E402

app = ServerApp()


def _write(obj, path: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, p)


def _fail(history: dict, out_json: str, error: str) -> None:
    """Record ``error`` as the run's end, so that whoever waits on ``out-json`` stops waiting."""
    history.update(finished=True, error=error)
    if out_json:
        _write(history, out_json)


class _FedAvg(FedAvg):
    """FedAvg that keeps the clients' error replies (``history["client_errors"]``, distinct, the
    first 5), so that a failed run names them without relying on the streamed log, and that ends the
    run at the first round in which no client sent an update (``history["error"]``, then raises):
    FedAvg itself would keep the model as it was and go on with the next round."""

    def __init__(self, history: dict, **kw):
        super().__init__(**kw)
        self._history = history

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        errors = self._history.setdefault("client_errors", [])
        for msg in replies:
            if msg.has_error():
                text = client_error_text(str(msg.error.reason))
                if text not in errors and len(errors) < 5:
                    errors.append(text)
        if all(msg.has_error() for msg in replies):
            n = len(replies)
            failed = ("no client replied" if not n else "the client replied with an error" if n == 1
                      else f"all {n} clients replied with an error")
            self._history["error"] = f"no client sent an update (in round {server_round}: {failed})"
            raise RuntimeError(self._history["error"])
        return super().aggregate_train(server_round, replies)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation; any failure, from reading the run config on, is recorded in ``out-json``
    (``finished`` and ``error``) before it is raised, so that the deployment stops waiting at once."""
    rc = context.run_config
    out_json = str(rc.get("out-json", "") or "")
    history: dict = {"rounds": [], "started": time.time()}
    try:
        _federate(grid, rc, history, out_json)
    except Exception as exc:
        where = f"in round {len(history['rounds'])}" if history["rounds"] else "at start-up, before round 0"
        _fail(history, out_json, history.get("error") or f"{type(exc).__name__}: {exc} ({where})")
        raise


def _federate(grid: Grid, rc, history: dict, out_json: str) -> None:
    cfg = task.FLConfig.from_run_config(rc)
    num_rounds = int(rc.get("num-rounds", 1))
    out_model = str(rc.get("out-model", "") or "")
    history["config"] = {**cfg.__dict__, "num_rounds": num_rounds}
    x_test, y_test = task.server_test_set(cfg)
    model = task.make_model(seed=cfg.seed, model=cfg.model, size=x_test.shape[-1])
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        m = task.make_model(seed=cfg.seed, model=cfg.model, size=x_test.shape[-1])
        m.load_state_dict(arrays.to_torch_state_dict())
        res = task.evaluate_model(m, x_test, y_test)
        history["rounds"].append({"round": server_round, "accuracy": res["accuracy"], "loss": res["loss"],
                                  "seconds": time.time() - history["started"]})
        if out_json:
            _write(history, out_json)
        return MetricRecord({"accuracy": res["accuracy"], "loss": res["loss"]})

    strategy = _FedAvg(history, fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=cfg.num_clients,
                       min_evaluate_nodes=0, min_available_nodes=cfg.num_clients)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=num_rounds,
                            train_config=ConfigRecord({"lr": cfg.lr}), evaluate_fn=evaluate,
                            timeout=float(rc.get("round-timeout", 600)))
    final = result.arrays.to_torch_state_dict()
    history["param_change_l2"] = float(
        sum(float((final[k].float() - initial[k].float()).pow(2).sum()) for k in initial) ** 0.5)
    history["finished"] = True
    if out_model:
        Path(out_model).parent.mkdir(parents=True, exist_ok=True)
        torch.save(final, out_model)
    if out_json:
        _write(history, out_json)
