"""``visualmixer audit``: every method through the same attacks and training; writes an HTML report."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from visualmixer.cli._common import attack_list, device_name, nonnegative_int, positive_int

EXAMPLES = """\
examples:
  visualmixer audit --quick --out out/audit
      VisualMixer (target 0.5) against noise, blur, pixelation and block scrambling on
      Fashion-MNIST and face photos, a few minutes on 2 CPU cores
  visualmixer audit --data fashion-mnist,photos,faces --methods visualmixer:0.3,0.5,0.7 \\
      noise:0.1,0.3 dppix:1 blur:1.5,3 pixelate:4 scramble:4 instahide:4 --attacks all --out out/audit
  visualmixer audit --full --out out/audit-full        the documented full configuration
  visualmixer audit --frontier --out out/audit-frontier
      Fashion-MNIST frontier: region sizes 4/7/14, /blocks and /online variants against
      pixelate, noise and scrambling, attacks A1-A5, seeds 0 1 2 (mean ± sd in the tables)
  visualmixer audit --quick --seeds 0 1 2 --out out/audit-3seeds
  visualmixer audit --frontier --train-results out/exp --out out/audit-frontier
      also show the accuracy of matching `visualmixer train` runs (metrics.json under out/exp)

methods (name:param, comma lists expand):
  clean, visualmixer:TAU[/rR][/flat][/blocks|/keyblocks][/online][/mixK[/similar][/shareS][/balanced[/cyclic]]],
  noise:SIGMA, dppix:EPS[/BLOCK], blur:SIGMA, pixelate:BLOCK, scramble:BLOCK, instahide:K,
  dpsgd:NOISE_MULTIPLIER (needs opacus)
  visualmixer options: /rR region side R (default: the size rule), /flat no channel-order shuffle,
  /blocks also permute the whole regions of each image (fresh permutation per image; hides the
  A2 region mosaic), /keyblocks permute them with one secret layout per key (like EtC block
  scrambling: a model can learn it), /online train the utility model on a fresh protection every epoch
  (online re-keying; the attacks still see one release), /mixK keyed region mixing across same-class
  groups of K (the training set and the victims protected as labelled sets), /similar look-alike
  groups, /shareS exchange regions at a keyed share S in (0, 1] of the positions only (e.g.
  visualmixer:0.5/mix4/share0.5), /balanced every collage holds each group member's regions at the
  same number of positions (e.g. visualmixer:1.0/mix8/balanced), /balanced/cyclic by the cyclic deal
  of releases made before 2026-11-29 (shares one cycle across positions; to reproduce old numbers)
train results (--train-results DIR...): every metrics.json of `visualmixer train` under DIR is
  matched to the VisualMixer methods by data set, target VFE, region and mode (offline/online;
  /blocks, /keyblocks and /flat have no match) and paired with a clean run of the same data, model, epochs
  and sizes; the tables get a column "train acc. % (loss pp)" (loss paired by seed)

attacks: A1 direct, A2 mosaic, A3 learned inversion, A4 recognition, A5 jigsaw, A6 faces,
  A7 key-wide layout recovery from the whole released set (or all)
data sets: fashion-mnist, photos, faces, or your own images:
  imagefolder:PATH  PATH/<class>/<images> (PATH/train + PATH/test are pooled)
  hf:PATH           a Hugging Face image data set saved with save_to_disk (--image-column/--label-column
                    when they cannot be detected)
  Your images are split into the owner's training images, victims and attacker images (disjoint, by
  class); the sizes --train/--victims/--attacker do not give are fitted to the data. --image-size N
  resizes and centre-crops them to NxN (needed when their sizes differ). Which setting to use:
  `visualmixer recommend --data imagefolder:PATH`.
  visualmixer audit --data imagefolder:photos/ --image-size 64 --out out/audit-mine
output: OUT/index.html (self-contained), OUT/results.json, OUT/img/*.png
"""


def add_user_data_options(p: argparse.ArgumentParser) -> None:
    """--image-size, --image-column, --label-column (shared with `visualmixer recommend`)."""
    p.add_argument("--image-size", type=positive_int, default=None, metavar="N",
                   help="your images (imagefolder:/hf:): resize (shorter side) and centre-crop to NxN "
                        "(default: keep their size when they all share one; e.g. 64 for colour photos)")
    p.add_argument("--image-column", default=None, metavar="NAME",
                   help="hf: data: the image column (default: detected)")
    p.add_argument("--label-column", default=None, metavar="NAME",
                   help="hf: data: the label column (default: detected)")


def add_utility_model_option(p: argparse.ArgumentParser) -> None:
    """--utility-model (shared with `visualmixer recommend`)."""
    from visualmixer.train.models import MODELS

    p.add_argument("--utility-model", choices=list(MODELS), default=None, metavar="{" + ",".join(MODELS) + "}",
                   help="train the utility classifier as this model on each method's region grid, e.g. "
                        "region-sorted (blind to the in-region shuffle; default: the audit's CNN)")


def fit_user_data(cfg, args, log):
    """For imagefolder:/hf: data, count the images per class (listing only; the audit decodes just
    what the split needs) and fit the split sizes that --train/--victims/--attacker do not give
    to them. Returns the new config."""
    from visualmixer.eval.userdata import count_user_images, is_user_data
    from visualmixer.eval.usersplit import fit_split_sizes

    user = [d for d in cfg.datasets if is_user_data(d)]
    if not user:
        return cfg
    sizes = (cfg.n_train, cfg.n_victims, cfg.n_attacker)
    for name in user:
        counts = count_user_images(name, image_column=cfg.image_column, label_column=cfg.label_column)
        log(f"[data] {name}: {sum(counts.values())} image files in {len(counts)} classes "
            f"(smallest: {min(counts.values())})")
        given = (args.train, args.victims, args.attacker)
        if None in given:  # (a size given by its flag is kept as given)
            fitted = fit_split_sizes(counts, n_train=sizes[0], n_victims=sizes[1], n_attacker=sizes[2])
            sizes = tuple(a if g is not None else min(a, b) for a, b, g in zip(sizes, fitted, given, strict=True))
    if sizes != (cfg.n_train, cfg.n_victims, cfg.n_attacker):
        note = (f"split sizes fitted to the data: {sizes[0]} training, {sizes[1]} victims, {sizes[2]} attacker "
                "images (set --train/--victims/--attacker to choose)")
        log(f"[data] {note}")
        cfg = dataclasses.replace(cfg, n_train=sizes[0], n_victims=sizes[1], n_attacker=sizes[2],
                                  notes=[*cfg.notes, note])
    return cfg


def _detectors(text: str) -> tuple[str, ...]:
    """argparse type of ``--detectors``: A6's detector names, comma-separated."""
    names = tuple(dict.fromkeys(s.strip().lower() for s in text.split(",") if s.strip()))
    if not names or set(names) - {"haar", "mtcnn"}:
        raise argparse.ArgumentTypeError(f"expected haar, mtcnn or both (comma-separated), got {text!r}")
    return names


def _method_specs(text: str) -> str:
    """argparse type of ``--methods``: method specs (comma lists expand) that the registry builds,
    e.g. a /rN side the core accepts; else a usage error naming the flag and the option."""
    from visualmixer.eval.methods import expand_methods, parse_method

    for spec in expand_methods([text]):
        try:
            parse_method(spec)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "audit",
        help="privacy audit: attacks, metrics and baselines side by side",
        description="Run VisualMixer and the baselines through the same attacks (docs/privacy.md) and the same "
        "training, score every reconstruction beside the prior-only guess, and write a self-contained "
        "HTML report with the privacy-utility plot.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="the quick configuration (default)")
    preset.add_argument("--full", action="store_true", help="the full configuration (docs/privacy.md)")
    preset.add_argument(
        "--frontier",
        action="store_true",
        help="the Fashion-MNIST frontier: regions 4/7/14, /blocks, /online and baselines, A1-A5, seeds 0 1 2",
    )
    p.add_argument("--data", default=None, metavar="SETS",
                   help="comma-separated data sets: fashion-mnist, photos, faces, imagefolder:PATH, hf:PATH")
    add_user_data_options(p)
    p.add_argument("--methods", nargs="+", type=_method_specs, default=None, metavar="SPEC", help="method specs")
    p.add_argument("--attacks", type=attack_list, default=None, metavar="LIST",
                   help="comma-separated attacks (A1-A11), or 'all'")
    p.add_argument("--train", type=positive_int, default=None, metavar="N", help="owner's training images")
    p.add_argument("--victims", type=positive_int, default=None, metavar="N", help="victim images")
    p.add_argument("--attacker", type=positive_int, default=None, metavar="N", help="attacker's own images")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs of the utility/A4 models")
    add_utility_model_option(p)
    p.add_argument("--a3-epochs", type=positive_int, default=None,
                   help="epochs of the A3 U-Net (the most, with --a3-patience)")
    p.add_argument("--a3-base", type=positive_int, default=None, metavar="N",
                   help="A3 U-Net width at full resolution (doubled per level; --full: 32)")
    p.add_argument("--a3-patience", type=positive_int, default=None, metavar="N",
                   help="stop A3 after N epochs without a better validation loss, keeping the best weights")
    p.add_argument("--a10-releases", type=positive_int, default=None, metavar="E",
                   help="epochs of online mixing an A10 attacker sees (methods .../mixK/online; default 10)")
    p.add_argument("--faces", type=nonnegative_int, default=None, metavar="N", help="LFW faces added to the A6 photos")
    p.add_argument("--detectors", type=_detectors, default=None, help="A6 detectors: haar,mtcnn")
    p.add_argument("--dpsgd", action="store_true", help="add the DP-SGD (Opacus) reference row")
    p.add_argument("--device", type=device_name, default=None, help="where models train, e.g. cuda (default cpu)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default 1)")
    p.add_argument("--seed", type=nonnegative_int, default=None, help="seed of subsets and models (default 0)")
    p.add_argument(
        "--seeds",
        type=nonnegative_int,
        nargs="+",
        default=None,
        metavar="S",
        help="run the whole audit once per seed; tables show mean ± sd (overrides --seed)",
    )
    p.add_argument(
        "--train-results",
        nargs="+",
        default=None,
        metavar="DIR",
        help="folders with metrics.json of `visualmixer train` runs (searched recursively) to add their "
        "accuracy and loss vs clean to the matching VisualMixer methods",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from visualmixer.eval.report import FULL, QUICK, audit
    from visualmixer.eval.report.audit import FRONTIER
    from visualmixer.eval.report.files import prepare_out_dir
    from visualmixer.eval.userdata import user_data_folders

    cfg = FULL if args.full else FRONTIER if args.frontier else QUICK
    changes: dict = {"notes": [], "progress": not args.quiet and sys.stderr.isatty()}
    if args.data:
        changes["datasets"] = tuple(s.strip() for s in args.data.split(",") if s.strip())
    if args.methods:
        changes["methods"] = tuple(args.methods)
    if args.attacks:
        changes["attacks"] = args.attacks
    for opt, fieldname in (
        ("train", "n_train"),
        ("victims", "n_victims"),
        ("attacker", "n_attacker"),
        ("epochs", "epochs"),
        ("a3_epochs", "a3_epochs"),
        ("a3_base", "a3_base"),
        ("a3_patience", "a3_patience"),
        ("a10_releases", "a10_releases"),
        ("faces", "n_faces"),
        ("seed", "seed"),
        ("utility_model", "utility_model"),
        ("device", "device"),
        ("threads", "threads"),
        ("image_size", "image_size"),
        ("image_column", "image_column"),
        ("label_column", "label_column"),
    ):
        if getattr(args, opt) is not None:
            changes[fieldname] = getattr(args, opt)
    if args.detectors:
        changes["face_detectors"] = args.detectors
    if args.dpsgd:
        changes["dpsgd"] = True
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
    elif args.seed is not None:
        changes["seeds"] = None  # an explicit --seed replaces the preset's seeds
    if args.train_results:
        for d in args.train_results:
            if not os.path.exists(d):
                print(f"visualmixer audit: error: --train-results {d}: no such file or folder", file=sys.stderr)
                return 2
        changes["train_results"] = tuple(args.train_results)
    cfg = dataclasses.replace(cfg, **changes)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    # (before any work: a --out that cannot be a folder, or lies in the data, is a usage error)
    prepare_out_dir(args.out, inputs=user_data_folders(cfg.datasets))
    cfg = fit_user_data(cfg, args, log)
    if any(getattr(args, f) is not None for f in ("attacker", "a3_base", "a3_epochs", "a3_patience")):
        # the report must not call an attacker "full strength" (or "weak") that the flags changed;
        # (after fit_user_data: the sizes it fitted are the ones the audit uses)
        cfg = dataclasses.replace(cfg, attacker_strength=f"custom attacker ({cfg.n_attacker} own images, U-Net "
                                  f"width {cfg.a3_base}, at most {cfg.a3_epochs} epochs)")
    path = audit(args.out, cfg, log=log)
    print(path)
    return 0
