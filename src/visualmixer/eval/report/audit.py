"""The audit's public names in one place (the engine is split by job):

====================================================  ==========================================
:mod:`visualmixer.eval.report.presets`                ``AuditConfig``, ``QUICK``, ``FULL``,
                                                      ``FRONTIER``, ``GOALS``, ``ATTACKS``
:mod:`visualmixer.eval.report.runner`                 ``run_audit``: methods × attacks × data sets
:mod:`visualmixer.eval.report.utility`                the utility classifiers (``fit_online``)
:mod:`visualmixer.eval.report.seeds`                  ``aggregate_seeds``
:mod:`visualmixer.eval.report.train_results`          reader of ``visualmixer train`` results
:mod:`visualmixer.eval.methods`                       the protection methods and their registry
:mod:`visualmixer.eval.attacks.registry`              the attacks' interface and registry
====================================================  ==========================================
"""

from __future__ import annotations

from visualmixer.eval.attacks import Recognizer
from visualmixer.eval.methods import expand_methods, parse_method, permute_regions
from visualmixer.eval.methods.base import ProtectionMethod
from visualmixer.eval.methods.visualmixer import VM_OPTIONS
from visualmixer.eval.report.presets import ATTACKS, FRONTIER, FULL, GOALS, QUICK, AuditConfig
from visualmixer.eval.report.runner import run_audit
from visualmixer.eval.report.seeds import aggregate_seeds
from visualmixer.eval.report.train_results import (
    TRAIN_DATA,
    attach_train_utility,
    find_train_utility,
    load_train_runs,
)
from visualmixer.eval.report.utility import fit_online

__all__ = [
    "AuditConfig",
    "Protector",
    "QUICK",
    "FULL",
    "FRONTIER",
    "run_audit",
    "expand_methods",
    "aggregate_seeds",
    "find_train_utility",
    "load_train_runs",
    "attach_train_utility",
    "fit_online",
    "permute_regions",
    "Recognizer",
    "ATTACKS",
    "GOALS",
    "TRAIN_DATA",
    "VM_OPTIONS",
]


class Protector:
    """A protection method named by its spec: :func:`~visualmixer.eval.methods.parse_method` as a class.

    ``Protector(spec)`` behaves as ``parse_method(spec)`` (every attribute and method is the
    parsed method's), and can be subclassed to observe the audit's calls: the audit protects
    every image set through ``method(images)``.
    """

    def __init__(self, spec: str):
        self.method: ProtectionMethod = parse_method(spec)

    #: attributes every former ``Protector`` had, whatever the method
    _DEFAULTS = {"blocks": False, "keyblocks": False, "online": False}

    def __getattr__(self, name):
        if name == "method":  # not yet set (e.g. during unpickling)
            raise AttributeError(name)
        try:
            return getattr(self.method, name)
        except AttributeError:
            if name in self._DEFAULTS:
                return self._DEFAULTS[name]
            raise

    @property
    def kind(self) -> str:
        """The method's registered name (``"visualmixer"``, ``"noise"``, …)."""
        return self.method.name

    def __call__(self, images, chunk: int = 1024):
        return self.method(images, chunk)

    def attacker_copy(self) -> ProtectionMethod:
        """The same method with the attacker's own randomness and key."""
        return self.method.attacker_copy()

    def __repr__(self) -> str:
        return f"Protector({self.method.spec!r})"
