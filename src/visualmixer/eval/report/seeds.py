"""Several seeds: mean, sd, min, max and n of every method's numbers over the audit's seeds."""

from __future__ import annotations

from visualmixer.tools.stats import summary_stats

__all__ = ["aggregate_seeds", "sd_stats"]


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
