"""Flower ClientApp: local obfuscation with the client's own key, local epochs of the shared model
(with ``soft-labels``, fit to the client's own teacher, trained once on its originals).

Node config (``flower-supernode --node-config``): ``partition-id``, ``num-partitions`` and optionally
``key-path`` (a key file from ``visualmixer keygen``; default: a seeded measurement key, not secret)
and ``data-root``. Only weights and scalar metrics are sent back; images and keys stay here.
"""

from __future__ import annotations

from visualmixer.fl import require_flwr

require_flwr()

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from visualmixer.fl import task  # noqa: E402

app = ClientApp()

_CACHE: dict = {}  # per-process cache of the (obfuscated) partition, keyed by config


def _config(context: Context) -> tuple[task.FLConfig, int, str | None]:
    cfg = task.FLConfig.from_run_config(context.run_config)
    nc = context.node_config
    cfg.num_clients = int(nc.get("num-partitions", cfg.num_clients))
    if nc.get("data-root"):
        cfg.data_root = str(nc["data-root"])
    return cfg, int(nc.get("partition-id", 0)), (str(nc["key-path"]) if nc.get("key-path") else None)


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg, pid, key_path = _config(context)
    server_round = int(msg.content["config"].get("server-round", 1)) if "config" in msg.content else 1
    ck = (repr(cfg), pid, key_path)
    if ck not in _CACHE:
        _CACHE.clear()
        x, y, idx = task.client_data(cfg, pid)
        teacher = task.client_teacher(cfg, x, y) if cfg.soft_labels else None  # trained once, kept here
        _CACHE[ck] = (x, y, idx, teacher)
    x, y, idx, teacher = _CACHE[ck]
    model = task.make_model(seed=cfg.seed, model=cfg.model, size=x.shape[-1])
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    key = task.client_key(cfg, pid, key_path)
    xo = task.obfuscate_local(x, idx, cfg, key, server_round, labels=y)  # online: a new shuffle every round
    stats = task.local_train(model, xo, y, cfg, server_round, teacher=teacher)
    metrics = MetricRecord({"train_loss": float(stats["train_loss"]), "num-examples": int(x.shape[0])})
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)
