"""The privacy audit and its self-contained HTML report (docs/privacy.md).

>>> from visualmixer.eval.report import quick_audit
>>> path = quick_audit("out/audit")          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from visualmixer.eval.report.audit import ATTACKS, FULL, GOALS, QUICK, AuditConfig, expand_methods, run_audit
from visualmixer.eval.report.files import prepare_out_dir
from visualmixer.eval.report.html import render_report

__all__ = [
    "ATTACKS",
    "AuditConfig",
    "FULL",
    "GOALS",
    "QUICK",
    "audit",
    "expand_methods",
    "quick_audit",
    "render_report",
    "run_audit",
]


def audit(out_dir, config: AuditConfig | None = None, *, log=print) -> Path:
    """Run the audit described by ``config`` and write ``out_dir/index.html`` (+ ``results.json``).

    Returns
    -------
    pathlib.Path
        Path of the written ``index.html``.

    Raises
    ------
    ValueError
        ``out_dir`` cannot be a folder (checked before the audit runs; the report's writers create it).
    """
    prepare_out_dir(out_dir)  # (a path that cannot be a folder fails before the audit runs)
    results, pictures = run_audit(config or AuditConfig(), log=log)
    return render_report(results, pictures, out_dir)


def quick_audit(out_dir, *, target_vfe: float = 0.5, progress: bool = False, log=print, **overrides) -> Path:
    """Audit VisualMixer against noise, blur, pixelation and block scrambling on Fashion-MNIST + faces.

    About three minutes on 2 busy CPU cores (measured 3.4 min with 1500 attacker images and 12
    face photos): 2000 training images, 200 victims, 1200 attacker images, 2 epochs, the A3
    U-Net for 2 epochs, A6 on 8 face photos. Writes
    ``out_dir/index.html``. The numbers are a smoke test of the trade-off; docs/privacy.md uses
    the ``FULL`` configuration.

    Parameters
    ----------
    out_dir : path-like
        Output folder (created).
    target_vfe : float
        VisualMixer's target VFE.
    progress : bool
        Show progress bars.
    log : callable
        Receives one line per step (``print`` by default; pass ``lambda s: None`` to silence).
    **overrides
        Any :class:`AuditConfig` field, e.g. ``n_victims=100``.

    Returns
    -------
    pathlib.Path
        Path of ``index.html``.
    """
    cfg = dataclasses.replace(
        QUICK,
        methods=("clean", f"visualmixer:{target_vfe}", "noise:0.1", "blur:1.5", "pixelate:4", "scramble:4"),
        progress=progress,
        notes=[],
        **overrides,
    )
    return audit(out_dir, cfg, log=log)
