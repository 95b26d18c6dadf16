"""``visualmixer recommend``: the cheapest VisualMixer setting that meets a risk budget on your images."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from visualmixer.cli._common import attack_list, device_name, flags_for, nonnegative_int, positive_int

EXAMPLES = """\
examples:
  visualmixer recommend --data imagefolder:photos/ --image-size 64 --out out/recommend
      targets 0.3, 0.5, 0.7 at the default region; best reconstruction SSIM at most 0.05 above the
      prior-only guess and re-identification at most 2x chance
  visualmixer recommend --data imagefolder:scans/ --targets 0.5 0.7 0.9 --regions 4 8 \\
      --variants plain flat blocks --max-ssim-over-prior 0.02 --max-reid 1.5 --out out/rec
  visualmixer recommend --data hf:data/my-set --max-face-rate 0.05 --out out/rec
      also require that face detectors find faces in at most 5 % of protected face photos (A6, on the
      built-in face photos)

The result: a table of every setting (accuracy loss vs clean in percentage points, the risk
metrics, whether it meets the budget), the cheapest setting that meets the budget and the
`visualmixer obfuscate` command for it; or, when none does, the closest one and by how much it
misses. The time estimate printed before the settings run comes from the clean reference (the
pilot); it is an estimate.

exit status: 0 a setting meets the budget, 1 none does, 2 usage error, 130 interrupted.
Interrupted? Run the same command again: finished settings are read from OUT/recommend.json.
The data and the audit settings must be the same (it says what differs); a new budget re-ranks
the saved results without recomputing them.
"""


def _number_list(text: str) -> list[str]:
    return [w for part in text for w in part.replace(",", " ").split()]


def _limit(text: str) -> float | None:
    """argparse type of the budget flags: a number (checked by Budget), or none (not checked)."""
    if text.strip().lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, or none (not checked), got {text!r}") from None


def add_parser(subparsers) -> argparse.ArgumentParser:
    from visualmixer.cli.audit import add_user_data_options, add_utility_model_option
    from visualmixer.eval.recommend import VARIANTS, Budget

    d = Budget()
    p = subparsers.add_parser(
        "recommend",
        help="which setting to use: the cheapest that meets a risk budget on your images",
        description="Run the privacy audit on your images for a grid of VisualMixer settings (target VFE x "
        "region x variant) and print the one with the lowest accuracy loss that meets the risk budget, with "
        "the `visualmixer obfuscate` command to use.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, metavar="SET",
                   help="imagefolder:PATH, hf:PATH, or a built-in set (fashion-mnist, photos, faces)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder of recommend.json (resumed from)")
    add_user_data_options(p)
    p.add_argument("--max-ssim-over-prior", type=_limit, default=d.max_ssim_over_prior, metavar="X",
                   help="best reconstruction SSIM minus the prior-only guess's (default %(default)s; none: "
                        "not checked)")
    p.add_argument("--max-reid", type=_limit, default=d.max_reid, metavar="X",
                   help="best re-identification rate in multiples of chance, 1/victims (default %(default)s; "
                        "none: not checked); must be below the number of victims, or it could never fail")
    p.add_argument("--max-face-rate", type=_limit, default=d.max_face_rate, metavar="X",
                   help="share of protected face photos in which a detector finds a face (A6 on the built-in "
                        "face photos; default: not checked)")
    p.add_argument("--targets", nargs="+", default=["0.3", "0.5", "0.7"], metavar="T",
                   help="target VFEs to try (default 0.3 0.5 0.7)")
    p.add_argument("--regions", nargs="+", default=["auto"], metavar="R",
                   help="region sides to try; auto = the size rule (default auto)")
    p.add_argument("--variants", nargs="+", default=["plain"], metavar="V",
                   help=f"protection variants to try: {', '.join(VARIANTS)}, or several joined by / (e.g. "
                        "mix4/similar); default plain. blocks, keyblocks and online are audit-only; the others "
                        "have a `visualmixer obfuscate` command (mixK/similar/shareS/balanced: --mix K "
                        "--groups similar --mix-share S --mix-balanced)")
    p.add_argument("--train", type=positive_int, default=None, metavar="N",
                   help="owner's training images (default: fitted to the data)")
    p.add_argument("--victims", type=positive_int, default=None, metavar="N", help="victim images (default: fitted)")
    p.add_argument("--attacker", type=positive_int, default=None, metavar="N",
                   help="attacker's own images (default: fitted)")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs of the utility/A4 models (default 2)")
    p.add_argument("--a3-epochs", type=positive_int, default=None, help="epochs of the A3 U-Net (default 2)")
    p.add_argument("--width", type=positive_int, default=None, help="width of the utility/A4 CNN (default 16)")
    add_utility_model_option(p)
    p.add_argument("--a3-base", type=positive_int, default=None, help="width of the A3 U-Net (default 12)")
    p.add_argument("--attacks", type=attack_list, default=None, metavar="LIST",
                   help="comma-separated attacks (A1-A11), or 'all' (the default)")
    p.add_argument("--device", type=device_name, default=None, help="where models train, e.g. cuda (default cpu)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default 1)")
    p.add_argument("--seed", type=nonnegative_int, default=None, help="seed of the split and the models (default 0)")
    p.add_argument("--overwrite", action="store_true", help="ignore saved results and start over")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=run)
    return p


def _parse_grid(args) -> tuple[list[float], list[int | None]]:
    from visualmixer.core.regions import resolve_region

    try:
        targets = [float(t) for t in _number_list(args.targets)]
    except ValueError:
        raise ValueError(f"--targets: numbers in [0, 1], got {' '.join(args.targets)}") from None
    regions: list[int | None] = []
    for r in _number_list(args.regions):
        if r == "auto":
            regions.append(None)
        elif r.isdigit() and int(r) >= 1:
            try:
                regions.append(resolve_region(int(r), 1, 1))
            except ValueError as exc:
                raise ValueError(f"--regions: {exc}") from None
        else:
            raise ValueError(f"--regions: region sides in pixels or auto, got {r!r}")
    return targets, regions


def _check_attacks(budget, cfg, specs) -> None:
    """The attacks must measure the budget (recommend() would refuse them too, naming no flag)."""
    from visualmixer.eval.recommend import unscored_settings

    attacks = tuple(a for a in cfg.attacks if a != "A6")
    why = unscored_settings(attacks, specs, budget)
    if why:
        raise ValueError(f"--attacks {','.join(attacks) or '(only A6)'}: {why}")


def run(args: argparse.Namespace) -> int:
    from visualmixer.cli.audit import fit_user_data
    from visualmixer.eval.recommend import Budget, format_recommendation, recommend, settings_grid
    from visualmixer.eval.report.files import prepare_out_dir
    from visualmixer.eval.report.presets import QUICK
    from visualmixer.eval.userdata import user_data_folders

    budget = Budget(args.max_ssim_over_prior, args.max_reid, args.max_face_rate)
    targets, regions = _parse_grid(args)
    variants = _number_list(args.variants)
    changes: dict = {"datasets": (args.data,), "notes": [], "progress": not args.quiet and sys.stderr.isatty()}
    for opt in ("epochs", "a3_epochs", "width", "utility_model", "a3_base", "device", "threads", "seed",
                "image_size", "image_column", "label_column"):
        if getattr(args, opt) is not None:
            changes[opt] = getattr(args, opt)
    for opt, fieldname in (("train", "n_train"), ("victims", "n_victims"), ("attacker", "n_attacker")):
        if getattr(args, opt) is not None:
            changes[fieldname] = getattr(args, opt)
    if args.attacks:
        changes["attacks"] = args.attacks
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    cfg = dataclasses.replace(QUICK, **changes)
    _check_attacks(budget, cfg, settings_grid(targets, regions, variants))
    # (before any work: a --out that cannot be a folder, or lies in the data, is a usage error)
    prepare_out_dir(args.out, inputs=user_data_folders((args.data,)))
    cfg = fit_user_data(cfg, args, log)
    why = budget.reid_unmeasurable(cfg.n_victims)
    if why:
        raise ValueError(f"--max-reid {budget.max_reid:g}: {why}; give --max-reid X with X < {cfg.n_victims}, more "
                         "victims (--victims N; more images per class), or --max-reid none to leave "
                         "re-identification unchecked")
    try:
        res = recommend(args.data, out_dir=args.out, budget=budget, targets=targets, regions=regions,
                        variants=variants, config=cfg, overwrite=args.overwrite, log=log)
    except KeyboardInterrupt:
        print(f"visualmixer recommend: interrupted; the finished settings are saved in {args.out}/recommend.json: "
              "run the same command again to go on", file=sys.stderr)
        return 130
    res["notes"] = [flags_for(n, "recommend") for n in dict.fromkeys([*cfg.notes, *res["notes"]])]
    print(format_recommendation(res))
    return 0 if res["best"] is not None else 1
