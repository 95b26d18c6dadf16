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


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    cfg = task.FLConfig.from_run_config(rc)
    num_rounds = int(rc.get("num-rounds", 1))
    out_json = str(rc.get("out-json", "") or "")
    out_model = str(rc.get("out-model", "") or "")

    x_test, y_test = task.server_test_set(cfg)
    model = task.make_model(seed=cfg.seed, model=cfg.model, size=x_test.shape[-1])
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    history: dict = {
        "config": {**cfg.__dict__, "num_rounds": num_rounds},
        "rounds": [],
        "started": time.time(),
    }

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        m = task.make_model(seed=cfg.seed, model=cfg.model, size=x_test.shape[-1])
        m.load_state_dict(arrays.to_torch_state_dict())
        res = task.evaluate_model(m, x_test, y_test)
        history["rounds"].append({"round": server_round, "accuracy": res["accuracy"], "loss": res["loss"],
                                  "seconds": time.time() - history["started"]})
        if out_json:
            _write(history, out_json)
        return MetricRecord({"accuracy": res["accuracy"], "loss": res["loss"]})

    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=cfg.num_clients,
                      min_evaluate_nodes=0, min_available_nodes=cfg.num_clients)
    try:
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=num_rounds,
                                train_config=ConfigRecord({"lr": cfg.lr}), evaluate_fn=evaluate,
                                timeout=float(rc.get("round-timeout", 600)))
    except Exception as exc:
        _fail(history, out_json, f"{type(exc).__name__}: {exc} (in round {len(history['rounds'])})")
        raise
    # a round where every client failed leaves the model as it was: say so at once, do not go on silently
    empty = [r for r in range(1, num_rounds + 1) if r not in result.train_metrics_clientapp]
    if empty:
        _fail(history, out_json, f"no client sent an update (in round {empty[0]}; rounds without one: {empty})")
        raise RuntimeError(history["error"])
    final = result.arrays.to_torch_state_dict()
    history["param_change_l2"] = float(
        sum(float((final[k].float() - initial[k].float()).pow(2).sum()) for k in initial) ** 0.5)
    history["finished"] = True
    if out_model:
        Path(out_model).parent.mkdir(parents=True, exist_ok=True)
        torch.save(final, out_model)
    if out_json:
        _write(history, out_json)
