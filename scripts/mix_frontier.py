"""The privacy-utility frontier with keyed region mixing: docs/img/mix-frontier.png.

Reads a merged audit ``results.json`` (``scripts/mix_audit.py --merge``) and plots, for every
method on one data set, the accuracy loss (percentage points against the clean row, the audit's
own utility model) against

- left: the best reconstruction SSIM of any attack minus the prior-only guess (class means);
- right: the best re-identification rate of any attack (log scale; chance = 1 / victims).

Mixing (``/mixK``) is drawn in red, VisualMixer one image at a time in blue, the baselines in grey; filled
dots use the audit's own short utility training. ``--utility`` (a ``scripts/mix_utility.py``
results.json) adds hollow dots at the accuracy losses of those runs (``--utility2``: a second set, e.g. another
model, as hollow diamonds against the first set's clean runs), and ``--train SPEC=PATH ...
clean=PATH`` (``visualmixer train`` metrics.json files, comma-separated for a mean over seeds, or a
number for the clean accuracy) adds
stars, each on the vertical of its audited spec (same privacy, longer training); ``--train2`` (same
form, ``--train2-label``) adds a second such series as diamonds, e.g. another model.
``--utility-only`` plots each method once, at the lower of its ``--utility`` and ``--utility2``
losses (each method with its better model), without the audit's short training. ``--also`` adds
the methods of further merged audits of the same data set (e.g. mixing a share of the regions,
``/shareS``, drawn in orange); ``--utility`` takes several results.json files.

    python scripts/mix_frontier.py out/mix-audit/results.json --out docs/img/mix-frontier.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mix_utility import mix_setting


def _colour(spec: str) -> str:
    if "/share" in spec:
        return "tab:orange"
    if "/mix" in spec:
        return "tab:red"
    return "tab:blue" if spec.startswith("visualmixer") else "0.45"


def _train_acc(path: str) -> float:
    """Mean final test accuracy of ``visualmixer train`` metrics.json files (comma-separated: the mean
    over the files, e.g. one per seed), or a number given as is."""
    try:
        return float(path)
    except ValueError:
        accs = [json.loads(Path(p).read_text())["summary"]["final_test_acc"]["mean"] for p in path.split(",")]
        return sum(accs) / len(accs)


def _utility_spec(row: dict) -> str | None:
    """The audit spec of a mix_utility row (``mix8-random-balanced`` at τ 1.0 ->
    ``visualmixer:1.0/mix8/balanced``; ``pixelate:7`` as is); None for ``clean``, online settings and
    soft-label rows (``--soft-labels``: plot those with ``--train``)."""
    setting, tau = row["setting"], row.get("tau", 0.5)
    if setting == "clean" or setting.endswith("-online") or row.get("soft_labels"):
        return None
    if ":" in setting:
        return setting
    if setting == "shuffle":
        return f"visualmixer:{tau}"
    how = mix_setting(setting)
    return (f"visualmixer:{tau}/mix{how['k']}" + ("/similar" if how["grouping"] == "similar" else "")
            + (f"/share{how['share']:g}" if how["share"] < 1 else "") + ("/balanced" if how["balanced"] else ""))


def _utility_losses(paths: list[Path], reference: list[Path] | None = None) -> dict:
    """``{spec: accuracy loss (points)}`` from mix_utility results.json files: the mean over seeds of
    the loss against the clean row of the same seed (the first file that has one; of ``reference``
    when given)."""
    rows = [r for p in paths for r in json.loads(p.read_text())]
    clean: dict = {}
    for r in [r for p in reference for r in json.loads(p.read_text())] if reference else rows:
        if r["setting"] == "clean":
            clean.setdefault(r["seed"], r["accuracy"])
    loss: dict = {}
    for r in rows:
        spec = _utility_spec(r)
        if spec is not None and r["seed"] in clean:
            loss.setdefault(spec, []).append(100.0 * (clean[r["seed"]] - r["accuracy"]))
    return {spec: sum(v) / len(v) for spec, v in loss.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--dataset", default=None, help="data set in the results (default: the first)")
    ap.add_argument("--train", nargs="*", default=[], metavar="SPEC=METRICS_JSON",
                    help="accuracy of longer training runs: clean=PATH and SPEC=PATH for audited specs")
    ap.add_argument("--train-label", default="longer training", help="legend text of the --train points")
    ap.add_argument("--train2", nargs="*", default=[], metavar="SPEC=METRICS_JSON",
                    help="a second series like --train (e.g. another model), drawn as diamonds")
    ap.add_argument("--train2-label", default="another model", help="legend text of the --train2 points")
    ap.add_argument("--utility", type=Path, nargs="*", default=[],
                    help="scripts/mix_utility.py results.json files: hollow points at their accuracy losses")
    ap.add_argument("--utility-label", default="20k images, 5 epochs", help="legend text of the hollow points")
    ap.add_argument("--utility2", type=Path, nargs="*", default=[],
                    help="a second set of mix_utility results.json files (e.g. another model), scored against "
                         "the clean runs of --utility: hollow diamonds")
    ap.add_argument("--utility2-label", default="20k images, 5 epochs, another model",
                    help="legend text of the hollow diamonds")
    ap.add_argument("--extra", type=Path, nargs="*", default=[],
                    help="results.json of further attacks on the same methods and data (e.g. A7 on a keyed "
                         "scramble): each method is plotted at the worse (for the owner) of all runs")
    ap.add_argument("--also", type=Path, nargs="*", default=[],
                    help="merged audit results.json of further methods on the same data (plotted as well)")
    ap.add_argument("--utility-only", action="store_true",
                    help="plot each method once, at the lower of its --utility and --utility2 accuracy losses, "
                         "without the audit's own short utility training; methods without such a row are left out")
    ap.add_argument("--ysymlog", action="store_true", help="accuracy loss on a symlog axis (linear up to 4 points)")
    ap.add_argument("--out", type=Path, default=Path("docs/img/mix-frontier.png"))
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.loads(args.results.read_text())
    name = args.dataset or next(iter(res["datasets"]))
    ds = res["datasets"][name]
    chance = 100.0 * ds["reid_chance"]
    series = []  # (marker, {spec: accuracy loss in points}, legend text) for --train and --train2
    for items, marker, text in ((args.train, "*", args.train_label), (args.train2, "D", args.train2_label)):
        trained = dict(item.split("=", 1) for item in items)
        if "clean" in trained:
            clean = _train_acc(trained.pop("clean"))
            series.append((marker, {s: 100.0 * (clean - _train_acc(p)) for s, p in trained.items()}, text))
    # the second set is scored against the first set's clean runs (e.g. another model against the small CNN)
    hollow = [(m, _utility_losses(paths, ref), text) for m, paths, ref, text in
              (("o", args.utility, None, args.utility_label),
               ("D", args.utility2, args.utility or None, args.utility2_label)) if paths]
    extra = [json.loads(p.read_text())["datasets"][name]["methods"] for p in args.extra]
    methods = dict(ds["methods"])
    for p in args.also:
        for spec, r in json.loads(p.read_text())["datasets"][name]["methods"].items():
            methods.setdefault(spec, r)

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.4), sharey=True)
    for spec, r in methods.items():
        if spec == "clean" or "summary" not in r or r.get("accuracy_loss_pp") is None:
            continue
        loss, dot = r["accuracy_loss_pp"], "o"
        if args.utility_only:  # each method at its better model: the lower loss of the utility sets
            found = [(util[spec], marker) for marker, util, _ in hollow if spec in util]
            if not found and not any(spec in losses for _, losses, _ in series):
                continue
            # a method with a --train/--train2 point only (no 20k/5 row) is drawn at that point alone
            loss, dot = min(found) if found else (None, None)
        sums = [r["summary"]] + [e[spec]["summary"] for e in extra if "summary" in e.get(spec, {})]
        xs = (max(s["ssim_over_prior"] for s in sums), max(max(100.0 * s["best_reid"] for s in sums), chance / 2))
        label = spec.replace("visualmixer:", "vm:") + (" (with A7)" if len(sums) > 1 else "")
        for ax, x in zip(axes, xs, strict=True):
            if loss is None:
                at = min(losses[spec] for _, losses, _ in series if spec in losses)
                ax.annotate(label, (x, at), textcoords="offset points", xytext=(7, 1), fontsize=7)
            else:
                ax.scatter([x], [loss], marker=dot, color=_colour(spec), s=40, zorder=3)
                ax.annotate(label, (x, loss), textcoords="offset points", xytext=(4, 4), fontsize=7)
            for marker, util, _ in [] if args.utility_only else hollow:
                if spec in util:
                    ax.scatter([x], [util[spec]], marker=marker, facecolors="none", edgecolors=_colour(spec), s=40,
                               zorder=3)
                    ax.plot([x, x], [loss, util[spec]], color=_colour(spec), lw=0.6, ls=":")
            for marker, losses, _ in series:
                if spec in losses:
                    ax.scatter([x], [losses[spec]], marker=marker, color=_colour(spec), s=90 if marker == "*" else 45,
                               zorder=4)
                    if loss is not None:
                        ax.plot([x, x], [loss, losses[spec]], color=_colour(spec), lw=0.6, ls=":")
    # an attacker holding the release's labels can always answer with the class mean: a floor
    labels_reid = 100.0 * ds["prior"]["class_mean"]["reid"]["rate"]
    axes[0].axvline(0.0, color="0.3", lw=0.8, ls=(0, (1, 3)), label="the labels alone (class mean)")
    axes[1].axvline(labels_reid, color="0.3", lw=0.8, ls=(0, (1, 3)))
    axes[0].axvline(0.05, color="green", lw=0.8, ls="--", label="goal: prior + 0.05")
    axes[0].set_xlabel("best reconstruction SSIM − prior (class means)")
    axes[1].axvline(1.0, color="green", lw=0.8, ls="--", label="goal: 1 %")
    axes[1].axvline(chance, color="0.6", lw=0.8, ls=":", label=f"chance ({chance:.2g} %)")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("best re-identification from any attack (%)")
    axes[0].set_ylabel("accuracy loss vs clean (points)")
    for ax in axes:
        if args.ysymlog:  # spreads the crowd of small losses, keeps the far ones on the plot
            ax.set_yscale("symlog", linthresh=4.0)
            ax.set_ylim(bottom=max(-0.5, ax.get_ylim()[0]))
            ax.set_yticks([t for t in (0, 1, 2, 3, 5, 10, 20, 40, 60) if t <= ax.get_ylim()[1]])
            ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.axhline(3.0, color="green", lw=0.8, ls="-.", label="goal: 3 points")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=t) for c, t in
               (("tab:red", "keyed region mixing"), ("tab:blue", "VisualMixer per image"), ("0.45", "baselines"))]
    if any("/share" in spec for spec in methods):
        handles.insert(1, plt.Line2D([], [], marker="o", ls="", color="tab:orange",
                                     label="mixing a share of the regions"))
    for marker, _, text in hollow:
        handles.append(plt.Line2D([], [], marker=marker, ls="", color="0.3", label=f"accuracy loss: {text}",
                                  **({} if args.utility_only else {"markerfacecolor": "none"})))
    for marker, _, text in series:
        handles.append(plt.Line2D([], [], marker=marker, ls="", color="0.3", label=f"accuracy loss: {text}"))
    lines = {lab: h for ax in axes for h, lab in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(handles=handles + list(lines.values()), loc="lower center", ncol=4, fontsize=8, frameon=False)
    cfg = res["config"]
    utility = "see the legend" if args.utility_only else f"{ds['n_train']} training images, {cfg['epochs']} epochs"
    fig.suptitle(f"{name}: {ds['n_victims']} victims, attacker with {ds['n_attacker']} own images "
                 f"(A3 U-Net base {cfg['a3_base']}, ≤{cfg['a3_epochs']} epochs, patience {cfg['a3_patience']}); "
                 f"utility: {utility}", fontsize=9)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
