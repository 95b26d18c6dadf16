"""Several audit runs as one: mean, sd, min, max and n of every method's numbers over seeds
(:func:`aggregate_seeds`), or the methods of runs of one seed on the same data (:func:`merge_runs`)."""

from __future__ import annotations

import copy

from visualmixer.tools.stats import summary_stats

__all__ = ["aggregate_seeds", "merge_runs", "sd_stats"]

#: What runs merged into one table must agree on, per data set.
_SAME_DATA = ("n_train", "n_victims", "n_attacker", "shape", "region")


def sd_stats(values) -> dict:
    """``{"mean", "sd", "min", "max", "n"}`` of the non-missing values (sample sd; 0 for one value)."""
    return summary_stats(values, sd_key="sd")


def _method_numbers(r: dict) -> dict:
    """The per-seed numbers of one method result that :func:`aggregate_seeds` summarises."""
    s = r.get("summary") or {}
    vfe = (r.get("achieved_vfe") or r.get("receiver_vfe") or {}).get("mean")
    return {
        "accuracy": r.get("accuracy"),
        "accuracy_loss_pp": r.get("accuracy_loss_pp"),
        "vfe": vfe,
        "ssim": {a: sc.get("ssim", {}).get("mean") for a, sc in (r.get("attacks") or {}).items()},
        "ssim_over_prior": s.get("ssim_over_prior"),
        "best_reid": s.get("best_reid"),
        "best_a4": s.get("best_a4"),
        "link_rate": s.get("link_rate"),
        "victim_link_rate": s.get("victim_link_rate"),
    }


def aggregate_seeds(per_seed: list[dict]) -> dict:
    """Mean, sd, min, max and n over seeds, per data set and method.

    Parameters
    ----------
    per_seed : list of dict
        Single-seed results of :func:`visualmixer.eval.report.runner.run_audit`, one per seed.

    Returns
    -------
    dict
        ``{dataset: {method: {"accuracy", "accuracy_loss_pp", "vfe", "ssim_over_prior",
        "best_reid", "best_a4": stats, "ssim": {attack: stats}}}}`` where ``stats`` is
        ``{"mean", "sd", "min", "max", "n"}``. The accuracy loss is paired by seed (each seed's
        method against the same seed's clean model); ``vfe`` is the achieved VFE for VisualMixer
        and the receiver's VFE otherwise (as in the tables). Failed methods count with n = 0.
    """
    out: dict = {}
    for res in per_seed:
        for ds, d in res.get("datasets", {}).items():
            for spec, r in d.get("methods", {}).items():
                out.setdefault(ds, {}).setdefault(spec, []).append(_method_numbers(r))
    agg: dict = {}
    for ds, methods in out.items():
        agg[ds] = {}
        for spec, nums in methods.items():
            a = {key: sd_stats([x[key] for x in nums]) for key in nums[0] if key != "ssim"}
            atks = list(dict.fromkeys(k for x in nums for k in x["ssim"]))
            a["ssim"] = {at: sd_stats([x["ssim"].get(at) for x in nums]) for at in atks}
            a["n_seeds"] = len(nums)
            agg[ds][spec] = a
    return agg


def merge_runs(runs: list[dict], labels: list[str], *, replace: bool = False) -> dict:
    """The methods of several audits of one seed on the same data, as one result.

    A long audit runs a few methods at a time so that finished runs are kept. Each data set's
    methods are taken from the runs in order (a method's first row is kept — with ``replace``,
    its last one, in the first one's place, except ``clean``, which stays the first run's; each run's accuracy
    loss is against its own ``clean`` row, which is the same when the data agree); the DP-SGD
    reference row goes last.

    Parameters
    ----------
    runs : list of dict
        ``results.json`` contents of :func:`visualmixer.eval.report.audit`.
    labels : list of str
        One name per run (e.g. its path), for messages and the ``merged_from`` record.

    Raises
    ------
    ValueError
        When runs differ in seed or in a data set's sizes, shape or region.
    """
    merged = copy.deepcopy(runs[0])
    merged["merged_from"] = list(labels)
    seed = merged.get("config", {}).get("seed")
    for res, label in zip(runs[1:], labels[1:], strict=True):
        if res.get("config", {}).get("seed") != seed:
            raise ValueError(f"{label}: seed {res.get('config', {}).get('seed')}, not {seed} as in {labels[0]}")
        for name, ds in res["datasets"].items():
            base = merged["datasets"].get(name)
            if base is None:  # a data set only this run has
                merged["datasets"][name] = copy.deepcopy(ds)
                continue
            for k in _SAME_DATA:
                if base.get(k) != ds.get(k):
                    raise ValueError(f"{label}: {name} {k} is {ds.get(k)}, not {base.get(k)} as in {labels[0]}")
            for spec, row in ds["methods"].items():
                if replace and spec != "clean":
                    base["methods"][spec] = copy.deepcopy(row)
                else:
                    base["methods"].setdefault(spec, copy.deepcopy(row))
            base["seconds"] = (base.get("seconds") or 0) + (ds.get("seconds") or 0)
    for ds in merged["datasets"].values():  # the DP-SGD reference row (training, not images) last
        ds["methods"] = dict(sorted(ds["methods"].items(), key=lambda kv: kv[0].startswith("dpsgd")))
    merged.setdefault("config", {})["methods"] = list(
        dict.fromkeys(spec for ds in merged["datasets"].values() for spec in ds["methods"]))
    return merged
