"""Goal checks that respect the run's noise, and the one-sentence privacy verdict of an audit.

A small audit (the quick preset: a few hundred victims, one seed) measures differences of a few
points with an uncertainty of several points. A goal is therefore judged against a *noise band*
(:data:`NOISE_RULE`):

- **met** (green) only when the value plus the band is within the goal;
- **missed** (red) when the value minus the band is beyond it;
- **too small a run to judge** (grey) otherwise.

The band is twice the standard error of the number: binomial (Agresti–Coull) over the victims for
accuracies and re-identification rates, the standard error of the mean over the victims for SSIM
(the prior's included), and, with several seeds, at least twice the spread (sample sd) over the
seeds.

>>> judge(-3.0, 9.2, 2.35)
'noisy'
>>> judge(0.5, 1.0, 2.35)
'met'
"""

from __future__ import annotations

import math

from visualmixer.eval.report.presets import GOALS

__all__ = ["NOISE_RULE", "STATUS_TEXT", "accuracy_band_pp", "judge", "judge_results", "method_judgement",
           "verdict_method", "verdict_sentence"]

#: How the reports decide whether a difference is larger than the run's noise (shown on the pages).
NOISE_RULE = (
    "Noise rule: every goal is judged against a noise band of twice the number's standard error "
    "(binomial over the victims for accuracy and re-identification, over the victims' scores for SSIM "
    "and the prior), or twice the spread over the seeds when there are several, whichever is larger. "
    "Green (met) only when the value plus the band is within the goal, red (missed) when the value "
    "minus the band is beyond it, grey otherwise: a difference inside the noise is too small a run to judge."
)

#: Words for the statuses of :func:`judge`.
STATUS_TEXT = {"met": "met", "missed": "missed", "noisy": "too small a run to judge", None: "not measured"}


def _binomial_se(p: float, n: int) -> float:
    """Agresti–Coull standard error of a rate ``p`` measured on ``n`` trials (never 0)."""
    n_t = n + 4
    p_t = (p * n + 2) / n_t
    return math.sqrt(p_t * (1 - p_t) / n_t)


def _mean_se(stats: dict | None) -> float:
    """Standard error of a mean from a ``{"mean", "std", "n"}`` summary (0 when unknown)."""
    if not stats or not stats.get("n") or stats.get("std") is None:
        return 0.0
    return float(stats["std"]) / math.sqrt(stats["n"])


def _with_seeds(band: float, agg: dict | None) -> float:
    """The band widened to twice the spread over seeds (``agg``: ``{"sd", "n"}`` over seeds)."""
    if agg and (agg.get("n") or 0) > 1 and agg.get("sd") is not None:
        return max(band, 2.0 * float(agg["sd"]))
    return band


def accuracy_band_pp(reference: float, accuracy: float, n: int, seeds: dict | None = None) -> float:
    """Noise band (percentage points) of an accuracy loss ``reference - accuracy`` on ``n`` test images.

    Twice the binomial standard error of the difference of two accuracies on ``n`` images each
    (unpaired: conservative), at least twice the sd over seeds of the paired losses (``seeds``:
    ``{"sd", "n"}`` in points).
    """
    se = math.hypot(_binomial_se(reference, n), _binomial_se(accuracy, n))
    return _with_seeds(200.0 * se, seeds)


def judge(value: float | None, band: float, goal: float) -> str | None:
    """``"met"`` when ``value + band <= goal``, ``"missed"`` when ``value - band > goal``, else
    ``"noisy"`` (too small a run to judge); None when ``value`` is missing."""
    if value is None:
        return None
    if value + band <= goal:
        return "met"
    if value - band > goal:
        return "missed"
    return "noisy"


def _entry(value, band, goal) -> dict:
    return {"value": value, "band": band, "goal": goal, "status": judge(value, band, goal)}


def method_judgement(ds_res: dict, spec: str, aggregate: dict | None = None, goals: dict | None = None) -> dict:
    """Every goal of one method on one data set judged against the noise (:func:`judge`).

    Parameters
    ----------
    ds_res : dict
        One data set of an audit's ``results["datasets"]``.
    spec : str
        The method.
    aggregate : dict, optional
        ``results["aggregate"][dataset][spec]`` (spread over seeds).
    goals : dict, optional
        Default :data:`~visualmixer.eval.report.presets.GOALS`.

    Returns
    -------
    dict
        ``{"ssim", "reid", "a4", "accuracy"}``, each ``{"value", "band", "goal", "status"}``
        (value in the units of its goal: SSIM above the prior, times chance, points above chance
        accuracy as a fraction, accuracy points lost).
    """
    goals = goals or GOALS
    agg = aggregate or {}
    r = ds_res["methods"][spec]
    s = r.get("summary") or {}
    n = int(ds_res["n_victims"])
    out: dict = {}
    prior = ds_res["prior"]["class_mean"]["ssim"]
    best = (r.get("attacks") or {}).get(s.get("best_ssim_attack") or "", {}).get("ssim")
    band = 2.0 * math.hypot(_mean_se(best), _mean_se(prior))
    out["ssim"] = _entry(s.get("ssim_over_prior"), _with_seeds(band, agg.get("ssim_over_prior")),
                         goals["ssim_over_prior"])
    chance = ds_res["reid_chance"]
    reid = s.get("best_reid")
    band = 0.0 if reid is None else 2.0 * _binomial_se(reid, n) / chance
    seeds = agg.get("best_reid")
    seeds = None if not seeds or seeds.get("sd") is None else {"sd": seeds["sd"] / chance, "n": seeds.get("n")}
    out["reid"] = _entry(s.get("reid_over_chance"), _with_seeds(band, seeds), goals["reid_over_chance"])
    a4 = s.get("best_a4")
    band = 0.0 if a4 is None else 2.0 * _binomial_se(a4, n)
    out["a4"] = _entry(s.get("a4_over_chance"), _with_seeds(band, agg.get("best_a4")), goals["a4_over_chance"])
    ref = next((m.get("accuracy") for m in ds_res["methods"].values() if m.get("kind") == "clean"), None)
    loss = r.get("accuracy_loss_pp")
    band = 0.0
    if loss is not None and ref is not None and r.get("accuracy") is not None:
        band = accuracy_band_pp(ref, r["accuracy"], n, agg.get("accuracy_loss_pp"))
    out["accuracy"] = _entry(loss, band, goals["acc_loss_pp"])
    return out


def judge_results(results: dict) -> dict:
    """Add ``goals_judged`` to every method with a summary in ``results`` (in place; returned):
    ``{goal: {"value", "band", "goal", "status"}}`` (:func:`method_judgement`), beside the raw
    ``goals_met`` that ignores the noise."""
    for ds, d in (results.get("datasets") or {}).items():
        agg = (results.get("aggregate") or {}).get(ds) or {}
        for spec, r in d.get("methods", {}).items():
            if "summary" in r:
                r["goals_judged"] = method_judgement(d, spec, agg.get(spec), results.get("goals"))
    return results


def verdict_method(results: dict) -> tuple[str, str] | None:
    """``(dataset, spec)`` the verdict speaks of: the first VisualMixer method without an error on
    the first data set that has one (else the first protecting method); None when there is none."""
    for kinds in (("visualmixer",), None):
        for ds, d in (results.get("datasets") or {}).items():
            for spec, r in d.get("methods", {}).items():
                if r.get("error") or r.get("kind") in ("clean", None) or "summary" not in r:
                    continue
                if kinds is None or r.get("kind") in kinds:
                    return ds, spec
    return None


def _kind(results: dict, found: tuple[str, str]) -> str | None:
    """The ``kind`` of method ``found = (dataset, spec)`` in ``results``."""
    return results["datasets"][found[0]]["methods"][found[1]].get("kind")


def _strength(results: dict) -> str:
    cfg = results.get("config") or {}
    seeds = results.get("seeds") or [cfg.get("seed")]
    # (the numbers are those of the first seed's run; the bands take the spread over all of them)
    count = "1 seed" if len(seeds) == 1 else f"seed {seeds[0]} of {len(seeds)} seeds, bands over all {len(seeds)}"
    parts = [cfg.get("attacker_strength") or "", count]
    return ", ".join(p for p in parts if p)


def verdict_sentence(results: dict, dataset: str | None = None, spec: str | None = None) -> str:
    """The privacy verdict of an audit in one sentence, with its numbers and their noise.

    Best reconstruction SSIM against the prior-only guess, re-identification against chance and
    the accuracy loss of ``spec`` on ``dataset`` (default :func:`verdict_method`), each with its
    noise band and goal status (:func:`method_judgement`).
    """
    if dataset is None or spec is None:
        failed = [(ds, sp, r["error"]) for ds, d in (results.get("datasets") or {}).items()
                  for sp, r in d.get("methods", {}).items() if r.get("kind") == "visualmixer" and r.get("error")]
        found = verdict_method(results)
        if failed and (found is None or _kind(results, found) != "visualmixer"):
            ds, sp, err = failed[0]
            return f"No privacy verdict: {sp} failed on {ds} ({err[:200]})."
        if found is None:
            return "No privacy verdict: the audit has no protected method with results."
        dataset, spec = found
    d = results["datasets"][dataset]
    r = d["methods"][spec]
    s = r.get("summary") or {}
    j = method_judgement(d, spec, ((results.get("aggregate") or {}).get(dataset) or {}).get(spec),
                         results.get("goals"))
    prior = d["prior"]["class_mean"]["ssim"]["mean"]

    def num(v, fmt):
        return "–" if v is None else format(v, fmt)

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f} %"

    ss, ri, ac = j["ssim"], j["reid"], j["accuracy"]
    return (
        f"Privacy verdict for {spec} on {dataset} ({_strength(results)}, {d['n_victims']} victims): "
        f"best reconstruction SSIM {num(s.get('best_ssim'), '.3f')} ({s.get('best_ssim_attack') or '–'}) vs "
        f"{prior:.3f} for the prior-only guess ({num(ss['value'], '+.3f')} ± {ss['band']:.3f}, goal ≤ "
        f"+{ss['goal']:g}: {STATUS_TEXT[ss['status']]}), re-identification {pct(s.get('best_reid'))} vs "
        f"{pct(d['reid_chance'])} chance ({num(ri['value'], '.1f')}× ± {ri['band']:.1f}, goal ≤ {ri['goal']:g}×: "
        f"{STATUS_TEXT[ri['status']]}), accuracy loss {num(ac['value'], '+.1f')} ± {ac['band']:.1f} points "
        f"(goal ≤ {ac['goal']:g}: {STATUS_TEXT[ac['status']]})."
    )
