"""Federated learning on obfuscated images with Flower (optional extra ``visualmixer[fl]``).

- :mod:`visualmixer.fl.partition` — seeded ``iid`` / ``dirichlet:ALPHA`` partitioners (no Flower needed);
- :mod:`visualmixer.fl.task` — a client's local obfuscation and training, server evaluation (plain torch);
- :mod:`visualmixer.fl.client_app` / :mod:`visualmixer.fl.server_app` — the Flower ``ClientApp`` and
  ``ServerApp`` (FedAvg); :mod:`visualmixer.fl.deploy` — start a loopback SuperLink + SuperNodes and run.

Flower is imported only by the app and deploy modules; :func:`require_flwr` gives a clear message
when it is missing.
"""

from __future__ import annotations

from visualmixer.fl.partition import dirichlet_partition, iid_partition, parse_partition, partition

__all__ = ["FlowerMissingError", "dirichlet_partition", "iid_partition", "parse_partition", "partition",
           "require_flwr"]


class FlowerMissingError(ImportError):
    """Flower (``flwr``) is not installed."""


def require_flwr():
    """Import and return ``flwr``, or raise :class:`FlowerMissingError` saying how to install it."""
    try:
        import flwr
    except ImportError as exc:
        raise FlowerMissingError(
            "federated learning needs Flower: pip install 'visualmixer[fl]' "
            "(or: pip install -c constraints.txt flwr==1.42.0)"
        ) from exc
    return flwr
