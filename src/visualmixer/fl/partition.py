"""Seeded partitioners: split a labelled set's indices among federated clients.

Pure functions of (labels, number of clients, seed): every client computes the same split
locally, so no index list ever needs to be sent.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dirichlet_partition", "iid_partition", "parse_partition", "partition"]


def iid_partition(n: int, num_clients: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffle ``range(n)`` with ``seed`` and deal it into ``num_clients`` near-equal sorted parts."""
    _check(n, num_clients)
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(p) for p in np.array_split(perm, num_clients)]


def dirichlet_partition(
    labels, num_clients: int, alpha: float, seed: int = 0, min_size: int = 1, max_tries: int = 100
) -> list[np.ndarray]:
    """Label-skewed (non-IID) split: each class is divided among clients by Dirichlet(alpha) shares.

    Small ``alpha`` (e.g. 0.1) gives clients few classes; large ``alpha`` approaches IID. Draws are
    repeated (deterministically, from the same seeded generator) until every client has at least
    ``min_size`` samples; after ``max_tries`` a ``ValueError`` says the set is too small.
    """
    labels = np.asarray(labels).reshape(-1)
    _check(labels.shape[0], num_clients)
    if not (alpha > 0 and np.isfinite(alpha)):
        raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * idx.shape[0]).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise ValueError(
        f"dirichlet:{alpha} could not give each of {num_clients} clients {min_size} samples "
        f"out of {labels.shape[0]} in {max_tries} tries; use more data, fewer clients or a larger alpha"
    )


def parse_partition(spec: str) -> tuple[str, float | None]:
    """``"iid"`` -> ("iid", None); ``"dirichlet:0.5"`` -> ("dirichlet", 0.5); else ValueError."""
    s = str(spec).strip().lower()
    if s == "iid":
        return "iid", None
    if s.startswith("dirichlet:"):
        try:
            alpha = float(s.split(":", 1)[1])
        except ValueError:
            alpha = float("nan")
        if alpha > 0 and np.isfinite(alpha):
            return "dirichlet", alpha
    raise ValueError(f"partition must be 'iid' or 'dirichlet:ALPHA' with ALPHA > 0, got {spec!r}")


def partition(spec: str, labels, num_clients: int, seed: int = 0) -> list[np.ndarray]:
    """Split by a spec string (see :func:`parse_partition`)."""
    kind, alpha = parse_partition(spec)
    labels = np.asarray(labels).reshape(-1)
    if kind == "iid":
        return iid_partition(labels.shape[0], num_clients, seed)
    return dirichlet_partition(labels, num_clients, alpha, seed)


def _check(n: int, num_clients: int) -> None:
    if int(num_clients) != num_clients or num_clients < 1:
        raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
    if n < num_clients:
        raise ValueError(f"cannot split {n} samples among {num_clients} clients")
