"""The reader of ``visualmixer train`` results: matching train runs add a ``train_utility`` entry to
the audit's VisualMixer methods (``visualmixer audit --train-results DIR``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from visualmixer.eval.methods import parse_method
from visualmixer.eval.report.seeds import sd_stats

__all__ = ["TRAIN_DATA", "load_train_runs", "find_train_utility", "attach_train_utility"]

#: audit data set name -> ``visualmixer train --data`` name
TRAIN_DATA = {"fashion-mnist": "fashion-mnist", "photos": "photos"}
_SIZE_KEYS = ("data", "model", "epochs", "train_size", "test_size", "image_size", "channels")


def load_train_runs(dirs) -> list[dict]:
    """Every readable ``metrics.json`` of ``visualmixer train`` under ``dirs`` (recursive).

    Each entry is the file's dict plus ``"_path"``; files without ``config`` (with ``data``,
    ``model``, ``mode`` and ``epochs``) and ``runs`` or ``summary`` are skipped.
    """
    found: list[dict] = []
    for d in [dirs] if isinstance(dirs, (str, os.PathLike)) else dirs:
        root = Path(d)
        paths = [root] if root.is_file() else sorted(root.rglob("metrics.json"))
        for path in paths:
            try:
                m = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(m, dict) or not isinstance(m.get("config"), dict):
                continue
            if "runs" not in m and "summary" not in m:
                continue
            if any(m["config"].get(k) is None for k in ("data", "model", "mode", "epochs")):
                continue  # not a `visualmixer train` run (e.g. a distillation run)
            m["_path"] = str(path)
            found.append(m)
    return found


def _seed_accs(m: dict) -> dict[int, float]:
    return {
        int(r["seed"]): float(r["final_test_acc"])
        for r in m.get("runs") or []
        if r.get("seed") is not None and r.get("final_test_acc") is not None
    }


def find_train_utility(runs: list[dict], dataset: str, prot, default_region: int) -> dict | None:
    """The ``visualmixer train`` accuracy matching a protection method ``prot``, or None.

    Only methods with a ``train_equivalent()`` (VisualMixer without ``/blocks``, ``/keyblocks``
    or ``/flat``) have a counterpart in ``visualmixer train``.

    A train run matches when its data set, target VFE, mode (``online`` for ``/online``, else
    ``offline``) and region side (None = the size rule, i.e. ``default_region``) equal the
    method's; ``/blocks`` and ``/flat`` have no counterpart in ``visualmixer train``. It needs a
    clean run (``target_vfe`` None) with the same data, model, epochs, train/test sizes, image
    size and channels. Among several matches the pair with the same optimizer, learning rate and
    batch size, then with the most shared seeds, then the first path in sort order wins.

    Returns
    -------
    dict or None
        ``{"accuracy": {"mean", "sd", "n"}, "loss_pp": {"mean", "sd", "n"}, "paired": bool,
        "source", "clean_source", "model", "epochs", "optimizer", "train_size", "seeds",
        "candidates"}``. ``loss_pp`` is 100 × (clean − method) per shared seed; without a shared
        seed it is the difference of the means (``paired`` False, sd None).
    """
    want = getattr(prot, "train_equivalent", lambda: None)()
    if want is None:
        return None
    vms, cleans = _candidates(runs, TRAIN_DATA.get(dataset, dataset), want, default_region)
    pairs = []
    for v in vms:
        for cl in cleans:
            if any(v["config"].get(k) != cl["config"].get(k) for k in _SIZE_KEYS):
                continue
            same_opt = all(v["config"].get(k) == cl["config"].get(k) for k in ("optimizer", "lr", "batch_size"))
            shared = sorted(set(_seed_accs(v)) & set(_seed_accs(cl)))
            pairs.append(((not same_opt, -len(shared), v["_path"], cl["_path"]), v, cl, shared))
    if not pairs:
        return None
    pairs.sort(key=lambda p: p[0])
    _, v, cl, shared = pairs[0]
    return _utility_entry(v, cl, shared, len(pairs))


def _candidates(runs: list[dict], data: str, want: dict, default_region: int) -> tuple[list, list]:
    """The runs of ``data`` with the wanted target VFE, mode and region, and the clean runs of ``data``."""
    region = want["region"] or default_region
    vms, cleans = [], []
    for m in runs:
        c = m["config"]
        if c.get("data") != data:
            continue
        if c.get("target_vfe") is None:
            cleans.append(m)
            continue
        try:
            tau = float(c["target_vfe"])
        except (TypeError, ValueError):
            continue
        if abs(tau - want["target_vfe"]) > 1e-9 or c.get("mode", "offline") != want["mode"]:
            continue
        if (c.get("region") or default_region) != region:
            continue
        vms.append(m)
    return vms, cleans


def _utility_entry(v: dict, cl: dict, shared: list[int], candidates: int) -> dict:
    """The ``train_utility`` entry of the chosen (method run, clean run) pair."""
    va, ca = _seed_accs(v), _seed_accs(cl)
    if va:
        acc = sd_stats(list(va.values()))
    else:
        fs = (v.get("summary") or {}).get("final_test_acc") or {}
        acc = {"mean": fs.get("mean"), "sd": fs.get("std"), "n": fs.get("n", 0)}
    if shared:
        loss = sd_stats([100.0 * (ca[s] - va[s]) for s in shared])
    else:
        cm = sd_stats(list(ca.values()))["mean"]
        if cm is None:
            cm = ((cl.get("summary") or {}).get("final_test_acc") or {}).get("mean")
        loss = {"mean": None if cm is None or acc["mean"] is None else 100.0 * (cm - acc["mean"]), "sd": None, "n": 0}
    c = v["config"]
    return {
        "accuracy": {k: acc.get(k) for k in ("mean", "sd", "n")},
        "loss_pp": {k: loss.get(k) for k in ("mean", "sd", "n")},
        "paired": bool(shared),
        "source": v["_path"],
        "clean_source": cl["_path"],
        "model": c.get("model"),
        "epochs": c.get("epochs"),
        "optimizer": c.get("optimizer"),
        "train_size": c.get("train_size"),
        "seeds": shared,
        "candidates": candidates,
    }


def attach_train_utility(results: dict, dirs, *, log=print) -> int:
    """Add ``train_utility`` (:func:`find_train_utility`) to the matching methods of ``results``.

    Returns the number of methods that got one.
    """
    runs = load_train_runs(dirs)
    log(f"[audit] train results: {len(runs)} metrics.json file(s) under {', '.join(map(str, dirs))}")
    count = 0
    for ds, d in results.get("datasets", {}).items():
        for spec, r in d.get("methods", {}).items():
            try:
                method = parse_method(spec)
            except ValueError:
                continue
            tu = find_train_utility(runs, ds, method, int(d["region"]))
            if tu is not None:
                r["train_utility"] = tu
                count += 1
    return count
