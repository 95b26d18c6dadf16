"""Quick clean-vs-obfuscated comparison for the main job (``visualmixer run``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from visualmixer.data.datasets import load_dataset
from visualmixer.train.loop import TrainConfig, plot_curves, train_seed

__all__ = ["quick_compare"]


def quick_compare(
    out_dir: str | os.PathLike,
    targets: Sequence[float | None] = (None, 0.5),
    *,
    epochs: int = 2,
    data: str = "fashion-mnist",
    model: str = "cnn",
    mode: str = "offline",
    optimizer: str = "adam",
    train_size: int | None = 10_000,
    test_size: int | None = 2_000,
    seeds: Sequence[int] = (0,),
    device: str = "cpu",
    data_root: str | None = None,
    progress: bool = False,
    resume: bool = False,
) -> dict:
    """Train the same small model clean and obfuscated; write an accuracy table and curves.

    Each target in ``targets`` (``None`` = clean baseline) is trained with the same model,
    data subset, epochs, optimizer and seeds, and tested on test images obfuscated to the same
    target, each with its own key. With the defaults (Fashion-MNIST, 10k/2k images,
    small CNN, 2 epochs, targets none and 0.5) it takes about a minute on 2 CPU cores.

    Parameters
    ----------
    out_dir : path-like
        Writes ``accuracy.md`` (markdown table), ``accuracy.json``, ``curves.png`` and one
        sub-directory per target (``target-none``, ``target-0.5``, ...) with checkpoints.
    targets : sequence of float or None
    epochs : int
    data, model, mode, optimizer : str
        As for ``visualmixer train``.
    train_size, test_size : int or None
        Seeded subsets (None: the whole split).
    seeds : sequence of int
    device : str
    data_root : str, optional
    progress : bool
    resume : bool, default False
        Continue the runs from the checkpoints in ``out_dir``; by default earlier checkpoints
        there are replaced.

    Returns
    -------
    dict
        ``rows``: one dict per target with ``target_vfe``, ``train_vfe``, ``test_vfe``,
        ``test_acc`` (mean over seeds), ``test_acc_per_seed``, ``loss_pp`` (accuracy points
        lost against the clean row, if one was run), ``seconds``, ``setup_obfuscate_s`` (the
        one-off obfuscation of the sets, not in the epoch times), ``epochs`` (per epoch: ``epoch``,
        ``test_acc``, ``train_acc``, ``epoch_s``, means over seeds); plus ``table`` (markdown),
        ``n_train``, ``n_test``, ``epochs_run``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_set = load_dataset(data, "train", root=data_root).subset(train_size, seed=0)
    test_set = load_dataset(data, "test", root=data_root).subset(test_size, seed=1)
    rows, groups = [], {}
    for tau in targets:
        name = "none" if tau is None else f"{float(tau):g}"
        if not resume:
            for s in seeds:
                (out / f"target-{name}" / f"seed{int(s)}" / "checkpoint.pt").unlink(missing_ok=True)
        cfg = TrainConfig(
            data=data, model=model, target_vfe=tau, mode=mode if tau is not None else "offline", optimizer=optimizer,
            epochs=epochs, seeds=list(seeds), device=device, out=str(out / f"target-{name}"),
            train_size=train_size, test_size=test_size, progress=progress, resume=resume,
        ).validate()
        t0 = time.perf_counter()
        runs = [train_seed(cfg, s, train_set, test_set) for s in cfg.seeds]
        accs = [r["final_test_acc"] for r in runs]
        rows.append({
            "target_vfe": tau,
            "train_vfe": _mean([r["train_vfe"] for r in runs]),
            "test_vfe": _mean([r["test_vfe"] for r in runs]),
            "test_acc": _mean(accs),
            "test_acc_per_seed": accs,
            "seconds": time.perf_counter() - t0,
            "setup_obfuscate_s": _mean([r.get("setup_obfuscate_s") for r in runs]),
            "epochs": _epoch_means(runs),
        })
        groups["clean" if tau is None else f"VFE {name} ({mode})"] = runs
    clean = next((r["test_acc"] for r in rows if r["target_vfe"] is None), None)
    for r in rows:
        r["loss_pp"] = None if clean is None else 100 * (clean - r["test_acc"])
    lines = [
        f"{model} on {data} ({len(train_set)} train / {len(test_set)} test images, {epochs} "
        f"epochs, {optimizer}, {mode} obfuscation, seeds {list(seeds)}); test images "
        "obfuscated to the same target, each with its own key.",
        "",
        "| target VFE | achieved VFE (train / test) | test accuracy | loss (points) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        tv = "—" if r["train_vfe"] is None else f"{r['train_vfe']:.3f}"
        lines.append(
            f"| {'none (clean)' if r['target_vfe'] is None else r['target_vfe']} | "
            f"{tv} / {r['test_vfe']:.3f} | {100 * r['test_acc']:.2f} % | "
            f"{_pp(r)} |"
        )
    table = "\n".join(lines) + "\n"
    (out / "accuracy.md").write_text(table)
    sizes = {"n_train": len(train_set), "n_test": len(test_set), "epochs_run": epochs}
    (out / "accuracy.json").write_text(json.dumps({"rows": rows, **sizes}, indent=2))
    plot_curves(groups, out / "curves.png")
    return {"rows": rows, "table": table, **sizes}


def _pp(row: dict) -> str:
    if row["target_vfe"] is None or row["loss_pp"] is None:
        return "—"
    return f"{row['loss_pp']:.2f}"


def _epoch_means(runs: list[dict]) -> list[dict]:
    """Per epoch, the mean over seeds of test accuracy and epoch seconds (the one-off obfuscation
    of the sets is not in them: ``setup_obfuscate_s``)."""
    n = min((len(r["history"]) for r in runs), default=0)
    return [{"epoch": i + 1,
             "test_acc": _mean([r["history"][i]["test_acc"] for r in runs]),
             "train_acc": _mean([r["history"][i]["train_acc"] for r in runs]),
             "epoch_s": _mean([r["history"][i]["epoch_s"] for r in runs])} for i in range(n)]


def _mean(vals):
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None
