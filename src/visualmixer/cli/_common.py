"""Helpers shared by the command modules (printing summaries, loading keys, and turning the
library's parameter names in error messages into this command line's flags)."""

from __future__ import annotations

import re
import shlex
import sys

MAX_PROBLEM_LINES = 50


#: Boolean parameters whose flag switches them off (``channel_order=False`` is ``--no-channel-order``).
NEGATED = frozenset({"channel_order"})

#: Library parameter -> command-line flag, for every command ("*") and per command. The library
#: writes parameters as ``name:`` (at the start of a message), ``name=True``, ``name=N`` /
#: ``name=PATH`` (a placeholder) or ``name='value'``; :func:`flags_for` rewrites exactly those.
PARAM_FLAGS: dict[str, dict[str, str]] = {
    "*": {
        "overwrite": "--overwrite",
        "manifest": "--manifest",
        "max_pixels": "--max-pixels",
        "workers": "--workers",
        "dask": "--dask",
        "batch_size": "--batch-size",
        "target_vfe": "--target-vfe",
        "region": "--region",
        "format": "--format",
        "rename": "--rename",
        "key": "--key",
        "mix": "--mix",
        "grouping": "--groups",
        "mix_share": "--mix-share",
        "mix_balanced": "--mix-balanced",
        "channel_order": "--no-channel-order",
        "root": "--data-root",
        "augment": "--augment",
    },
    # ``size`` (the data loaders' resize: "pass size=N") only in commands with a flag for it
    "soft-labels": {"size": "--image-size"},
    "run": {"size": "--size"},
    "fl": {"lr": "--lr", "model": "--model", "soft_labels": "--soft-labels", "soft_label_epochs": "--soft-label-epochs",
           "soft_label_temperature": "--soft-label-temperature", "soft_label_features": "--soft-label-features"},
    "train": {"size": "--image-size", "loader_workers": "--loader-workers", "prefetch": "--prefetch",
              "mix_grouping": "--groups", "mix_design": "--mix-design",
              "mode": "--mode", "soft_labels": "--soft-labels", "soft_label_epochs": "--soft-label-epochs",
              "soft_label_file": "--soft-label-file", "soft_label_features": "--soft-label-features",
              "soft_label_temperature": "--soft-label-temperature", "lr_schedule": "--lr-schedule",
              "epochs": "--epochs", "seeds": "--seeds", "lr": "--lr", "device": "--device", "out": "--out",
              "weight_decay": "--weight-decay", "image_size": "--image-size", "train_size": "--train-size",
              "test_size": "--test-size", "target_acc": "--target-acc",
              "optimizer": "--optimizer", "channels": "--channels", "secret_keys": "--secret-keys",
              "channels_last": "--channels-last", "model": "--model", "data": "--data"},
    **{cmd: {"n_train": "--train", "n_victims": "--victims", "n_attacker": "--attacker",
             "image_size": "--image-size", "image_column": "--image-column", "label_column": "--label-column",
             "out_dir": "--out", "max_ssim_over_prior": "--max-ssim-over-prior", "max_reid": "--max-reid",
             "max_face_rate": "--max-face-rate", "targets": "--targets", "regions": "--regions",
             "variants": "--variants", "size": "--image-size"}
       for cmd in ("audit", "recommend")},
}


def flags_for(message: str, command: str | None = None) -> str:
    """Rewrite the parameter names of a library message as ``command``'s flags, on one line.

    ``name=False`` / ``name=None`` become ``no --flag`` (the option not given), numbers are kept.

    >>> flags_for("pass overwrite=True to start over; or manifest=PATH", "obfuscate")
    'pass --overwrite to start over; or --manifest PATH'
    >>> flags_for("format='same': JPEG inputs ...")
    '--format same: JPEG inputs ...'
    >>> flags_for("made with target_vfe=0.5, region=None, channel_order=False")
    'made with --target-vfe 0.5, no --region, --no-channel-order'
    >>> flags_for("lr=nan is not allowed; weight_decay=inf. lr=1e-05.", "train")
    '--lr nan is not allowed; --weight-decay inf. --lr 1e-05.'
    """
    table = {**PARAM_FLAGS["*"], **PARAM_FLAGS.get(command or "", {})}
    pattern = re.compile(
        r"(?<![\w.\-/])(" + "|".join(map(re.escape, table)) + r")(:|=)"
        # numbers as Python writes them (1e-05, inf, nan too), ending a sentence or not
        r"(True\b|False\b|None\b|[A-Z]+\b|'[^']*'|-?(?:\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|inf|nan)(?!\w|\.\w)|)"
    )

    def sub(m: re.Match) -> str:
        name, sep, value = m.group(1), m.group(2), m.group(3)
        flag = table[name]
        if sep == ":":
            return flag + ":" + value
        if name in NEGATED and value in ("True", "False"):
            value = "False" if value == "True" else "True"
        if value in ("True", ""):
            return flag
        if value in ("False", "None"):
            return f"no {flag}"
        return f"{flag} {value.strip(chr(39))}"

    return pattern.sub(sub, " ".join(str(message).split()))


def resume_command(argv: list[str] | None, *, drop: tuple[str, ...] = ()) -> str:
    """The command line that resumes this run (as typed, shell-quoted), less the flags ``drop``."""
    return shlex.join(["visualmixer", *(a for a in (sys.argv[1:] if argv is None else argv) if a not in drop)])


def load_key(path):
    """Load a key file; errors name the ``--key`` option."""
    from visualmixer.core.keys import Key

    try:
        return Key.load(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"--key: no key file at {path} (make one with `visualmixer keygen`)") from None
    except IsADirectoryError:
        raise ValueError(f"--key: {path} is a folder; give the key file (made by `visualmixer keygen`)") from None
    except PermissionError as exc:
        raise PermissionError(f"--key: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"--key: {exc}") from None


def warn(msg: str, command: str | None = None) -> None:
    """Print a library warning, its parameter names as flags."""
    print(f"warning: {flags_for(msg, command)}", file=sys.stderr)


def int_type(low: int, high: int | None = None, *, allowed: str):
    """An argparse type: an integer from ``low`` to ``high`` (no upper bound when None), else a
    usage error saying ``expected {allowed}``."""

    def parse(text: str) -> int:
        import argparse

        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {value}")
        return value

    return parse


#: argparse types: an integer >= 0, and >= 1.
nonnegative_int = int_type(0, allowed="an integer >= 0")
positive_int = int_type(1, allowed="a positive integer")
#: A seed (the bound of ``visualmixer.train.config.MAX_SEED``).
seed_int = int_type(0, 2**32 - 1, allowed="a seed from 0 to 4294967295")


def positive_number(text: str) -> float:
    """argparse type of a learning rate: a finite number > 0, the check ``visualmixer train`` makes
    (:func:`visualmixer.train.config.check_real`), else a usage error naming the flag."""
    import argparse

    from visualmixer.train.config import check_real

    try:
        return check_real("value", float(text), 0.0, low_open=True)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}") from None


def attack_list(text: str) -> tuple[str, ...]:
    """argparse type of ``--attacks``: comma-separated registered attack names (any case), or
    ``all``; an unknown name is a usage error naming the flag (a typo must not drop an attack)."""
    import argparse

    from visualmixer.eval.attacks import attack_names

    known = attack_names()
    names = [a.strip().upper() for a in text.split(",") if a.strip()]
    if names == ["ALL"]:
        return known
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown attack(s) {', '.join(unknown) or '(none given)'}; choose from "
                                         f"{', '.join(known)} or all")
    return tuple(dict.fromkeys(names))


def device_name(text: str) -> str:
    """argparse type of ``--device``: a device torch knows and this machine has (``cpu``, ``cuda``,
    ``cuda:N``), else a usage error naming the flag."""
    import argparse

    from visualmixer.train.config import resolve_device

    try:
        resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


#: What ``--region`` accepts, for the help texts (tests/test_cli_edges.py checks it against the core).
REGION_RANGE = ("1 to 256, except sides with more than 15 shuffle levels (120, 168, 180, 210, 216, 240, "
                "252)")


def region_side(text: str) -> int:
    """argparse type of ``--region``: a side the core accepts (``resolve_region``), else a usage
    error naming the flag (argparse's ``argument --region: ...``, exit 2)."""
    import argparse

    value = positive_int(text)
    from visualmixer.core.regions import resolve_region

    try:
        return resolve_region(value, 1, 1)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("region ")) from None


def _unit_interval(text: str, what: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{what} must be in [0, 1], got {value}")
    return value


def unit_float(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    return _unit_interval(text, "the value")


def share_float(text: str) -> float:
    """argparse type: a share in (0, 1] (``--mix-share``)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:  # NaN fails the comparison
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {text!r}")
    return value


def target_or_none(text: str) -> float | None:
    """argparse type: a target VFE in [0, 1], or ``none``/``clean`` for the clean baseline."""
    if text.lower() in ("none", "clean"):
        return None
    return _unit_interval(text, "target VFE (or 'none')")


def folder_run_options(args) -> dict:
    """The keyword arguments that ``obfuscate`` and ``restore`` pass alike to the folder tools."""
    return {"key_path": args.key, "manifest": args.manifest, "overwrite": args.overwrite,
            "workers": args.workers, "dask": args.dask, "progress": not args.quiet, "warn": warn}


def print_summary(verb: str, summary, *, quiet: bool = False) -> None:
    """Print the one-line summary to stdout and each problem (id: reason) to stderr."""
    parts = [f"{verb} {summary.done}"]
    if summary.already:
        parts.append(f"already done {summary.already}")
    parts += [f"skipped {summary.skipped}", f"failed {summary.failed}"]
    if summary.ignored:
        parts.append(f"ignored (not images) {summary.ignored}")
    if getattr(summary, "never", 0):
        parts.append(f"never obfuscated {summary.never}")
    rate = summary.done / summary.seconds if summary.seconds > 0 else 0.0
    line = ", ".join(parts) + f" in {summary.seconds:.1f} s ({rate:.1f} images/s)"
    if summary.manifest is not None:
        line += f"; manifest: {summary.manifest}"
    if not quiet or summary.exit_code:
        print(line)
    for image_id, status, reason in summary.problems[:MAX_PROBLEM_LINES]:
        print(f"  {status:7s} {image_id}: {flags_for(reason)}", file=sys.stderr)
    extra = len(summary.problems) - MAX_PROBLEM_LINES
    if extra > 0:
        print(f"  ... and {extra} more (every file's status is in the manifest)", file=sys.stderr)


def add_mix_shape_options(p, *, share_default: float | None = 1.0) -> None:
    """``--mix-share S`` and ``--mix-balanced``, the same in ``train``, ``obfuscate`` and ``fl``
    (``share_default=None`` lets a command tell a share given from none)."""
    p.add_argument("--mix-share", type=share_float, default=share_default, metavar="S",
                   help="with --mix: exchange regions at a keyed share S in (0, 1] of the region positions "
                        "of each group, the others keep each image's own region (default 1: every position; "
                        "e.g. --mix-share 0.5)")
    p.add_argument("--mix-balanced", action="store_true",
                   help="with --mix: every collage holds each group member's regions at the same number of "
                        "positions, so no source dominates a collage (default: a keyed permutation per position)")


def add_augment_option(p, *, help: str) -> None:
    """``--augment NAME...`` (:data:`visualmixer.train.augment.AUGMENTATIONS`), in ``train``, ``soft-labels``
    and ``fl``."""
    from visualmixer.train.augment import AUGMENTATIONS

    names = tuple(AUGMENTATIONS)
    p.add_argument("--augment", nargs="+", default=[], choices=names, metavar="{" + ",".join(names) + "}", help=help)


def add_soft_label_options(p, *, epochs_default: str) -> None:
    """``--soft-labels`` and its teacher's options, the same in ``train`` and ``fl``."""
    p.add_argument("--soft-labels", default=None, metavar="{region-sorted,region-sorted-channels}",
                   help="train on the owner's soft labels: a teacher of this model (blind to the in-region "
                        "shuffle) is trained on the original images first, and the model is fit to its class "
                        "probabilities on every protected training image (default: hard labels)")
    p.add_argument("--soft-label-epochs", type=positive_int, default=None, metavar="N",
                   help=f"with --soft-labels: the teacher's epochs (default: {epochs_default})")
    p.add_argument("--soft-label-temperature", type=float, default=4.0, metavar="T",
                   help="with soft labels: the distillation temperature (default: 4)")
    p.add_argument("--soft-label-features", type=float, default=0.0, metavar="W",
                   help="with soft labels and a region-sorted --model: also fit the teacher's region-grid "
                        "features on every batch, with weight W (recommended: 1; default: 0, the "
                        "probabilities only)")
