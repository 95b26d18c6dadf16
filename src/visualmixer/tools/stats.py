"""One summary of a list of numbers: ``{"mean", "std" | "sd", "min", "max", "n"}``.

The one home of the small statistics every result file carries (per-image scores of the audit,
per-seed accuracies, per-run training numbers). It lives in ``tools`` so that every layer above
(``train``, ``eval``) can use it. Missing values (``None``, NaN) are left out; the spread is the
sample standard deviation (0.0 for one value). Existing result files name the spread ``"std"``
(metrics, ``visualmixer train``) or ``"sd"`` (the audit's seed aggregates): ``sd_key`` keeps both.

>>> summary_stats([0.5, None, 0.7, float("nan")])["n"]
2
>>> summary_stats([], sd_key="sd")
{'mean': None, 'sd': None, 'min': None, 'max': None, 'n': 0}
"""

from __future__ import annotations

import math

import torch

__all__ = ["summary_stats"]


def _values(values) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float64)


def summary_stats(values, *, sd_key: str = "std") -> dict:
    """Mean, sample standard deviation, min, max and count of ``values``.

    Parameters
    ----------
    values : iterable of float or None, or torch.Tensor
        Any shape of tensor (flattened) or a sequence; ``None`` and NaN entries are ignored,
        infinities are kept.
    sd_key : {"std", "sd"}
        Name of the standard deviation in the returned dict.

    Returns
    -------
    dict
        ``{"mean", sd_key, "min", "max", "n"}`` as Python floats and an int; with no value left,
        every statistic is ``None`` and ``n`` is 0.
    """
    if sd_key not in ("std", "sd"):
        raise ValueError(f"sd_key must be 'std' or 'sd', got {sd_key!r}")
    v = _values(values)
    v = v[~torch.isnan(v)]
    n = int(v.numel())
    if n == 0:
        return {"mean": None, sd_key: None, "min": None, "max": None, "n": 0}
    return {
        "mean": float(v.mean()),
        sd_key: float(v.std()) if n > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": n,
    }
