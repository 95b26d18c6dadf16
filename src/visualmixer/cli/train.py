"""``visualmixer train``: train a classifier on obfuscated images and test it on obfuscated images."""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings

from visualmixer.cli._common import (
    add_augment_option,
    add_mix_shape_options,
    add_soft_label_options,
    flags_for,
    positive_int,
    target_or_none,
)
from visualmixer.data.datasets import DATASET_NAMES


def add_parser(subparsers) -> argparse.ArgumentParser:
    from visualmixer.train.fit import LR_SCHEDULES
    from visualmixer.train.loop import MODES, OPTIMIZERS
    from visualmixer.train.models import MODELS

    p = subparsers.add_parser(
        "train",
        help="train a classifier on obfuscated images, test it on obfuscated images",
        description=(
            "Train a model on obfuscated training images and evaluate it on test images that are "
            "each obfuscated with their own key (docs/training.md). --target-vfe none trains the clean "
            "baseline with the same everything else. Writes DIR/metrics.json, DIR/curves.png and "
            "DIR/seed<S>/checkpoint.pt (after every epoch; --resume continues). The default keys "
            "are derived from the seed (deterministic, NOT secret); --secret-keys uses OS "
            "randomness."
        ),
    )
    p.add_argument("--data", default="fashion-mnist",
                   help=f"data set: {', '.join(DATASET_NAMES)} (default fashion-mnist)")
    p.add_argument("--data-root", default=None,
                   help="data directory (Fashion-MNIST default /usr/share/datasets/fashion-mnist)")
    # choices are listed, not enforced by argparse: the library's message names the valid ones
    p.add_argument("--model", default="cnn", metavar="{" + ",".join(MODELS) + "}",
                   help=f"model: {', '.join(MODELS)} (default: %(default)s; region-sorted and region-sorted-channels, "
                        "for colour, ignore in-region shuffles)")
    p.add_argument("--target-vfe", type=target_or_none, default=0.5,
                   help="target VFE in [0, 1], or 'none' for the clean baseline (default 0.5)")
    p.add_argument("--mode", default="offline", metavar="{" + ",".join(MODES) + "}",
                   help="obfuscation: offline (each training image shuffled once, the same every "
                        "epoch) or online (a fresh shuffle every epoch); default: %(default)s")
    p.add_argument("--optimizer", default="adam", metavar="{" + ",".join(OPTIMIZERS) + "}",
                   help=f"optimizer: {', '.join(OPTIMIZERS)} (default: %(default)s; ST-Adam did not beat it in "
                        "docs/results.md)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 1e-3 for st-adam/adam, 0.05 for sgd)")
    p.add_argument("--lr-schedule", default="constant", metavar="{" + ",".join(LR_SCHEDULES) + "}",
                   help="learning rate over the epochs: constant, or cosine down to 0 after the last epoch "
                        "(also the soft-label teacher's; default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=0.0, metavar="WD",
                   help="weight decay (decoupled as in AdamW for adam and st-adam, L2 for sgd; "
                        "default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=3, metavar="N",
                   help="training epochs per seed (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=128, metavar="B",
                   help="training batch size (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED",
                   help="one run per seed: model init, batch order and the derived keys; several "
                        "give a mean and spread (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="feed images as 1 or 3 channels (default: the data set's own)")
    p.add_argument("--image-size", type=int, default=None,
                   help="crop side for photos (default 32), resize side for imagefolder")
    p.add_argument("--train-size", type=int, default=None,
                   help="use a seeded random subset of this many training images")
    p.add_argument("--test-size", type=int, default=None,
                   help="use a seeded random subset of this many test images")
    p.add_argument("--region", type=int, default=None, help="region side (default: size rule)")
    _add_mixing_options(p)
    p.add_argument("--target-acc", type=float, default=None,
                   help="test accuracy in [0, 1] for the epochs-to-target metric")
    p.add_argument("--secret-keys", action="store_true",
                   help="OS-random training key (saved 0600 in DIR/seed<S>/key) and fresh "
                        "randomness for the test images; not deterministic")
    _add_speed_options(p)
    _add_target_options(p)
    p.add_argument("--resume", action="store_true", help="continue from DIR/seed<S>/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", default="out/train", metavar="DIR", help="output directory")
    p.set_defaults(func=run)
    return p


def _add_speed_options(p: argparse.ArgumentParser) -> None:
    """Where and how the work runs: the online feed's workers or thread, the model's memory layout."""
    p.add_argument("--loader-workers", type=int, default=0, metavar="N",
                   help="online mode: obfuscate the training batches in N worker processes "
                        "beside the training step, kept for the whole run (same batches; "
                        "default 0: in the training process, on --device)")
    p.add_argument("--prefetch", type=int, default=None, metavar="N",
                   help="online mode in the training process: obfuscate N batches ahead in a "
                        "background thread, beside the training step (same batches; 0: none; "
                        "default: 2 on a GPU or with one torch thread, else 0)")
    p.add_argument("--channels-last", action="store_true",
                   help="keep the model in the channels-last memory format: a faster step on the CPU "
                        "(small CNN about 1.4x, ResNet-18 1.1x); the same training up to rounding, not bit for "
                        "bit (default: off, the layout of the documented numbers)")


def _add_target_options(p: argparse.ArgumentParser) -> None:
    """What the model is fit to: soft labels (a teacher, or a released file) and the augmentation."""
    add_soft_label_options(p, epochs_default="--epochs")
    p.add_argument("--soft-label-file", default=None, metavar="FILE",
                   help="train on soft labels released with the data (made by `visualmixer soft-labels`), "
                        "joined on the file names of --data imagefolder:PATH; with --soft-label-features the "
                        "file needs the features beside it (`visualmixer soft-labels --features`)")
    add_augment_option(p, help="training-time augmentation of the model's (and a --soft-labels teacher's) "
                               "batches: hflip mirrors each image's region grid left-right with probability 0.5 "
                               "(with --soft-label-file the file must hold the mirrored images' logits: "
                               "visualmixer soft-labels --augment hflip). Default: none")


def _add_mixing_options(p: argparse.ArgumentParser) -> None:
    """--mix and the options that shape it."""
    p.add_argument("--mix", type=int, default=None, metavar="K",
                   help="keyed region mixing: protect the training set as a whole, exchanging regions "
                        "within same-class groups of K images (>= 2) before the in-region shuffle; "
                        "online mode re-mixes every epoch (default: no mixing)")
    p.add_argument("--groups", choices=("random", "similar"), default="random",
                   help="with --mix: keyed random groups or look-alike groups (default: random)")
    add_mix_shape_options(p)
    p.add_argument("--mix-design", choices=("switched", "cyclic"), default=None,
                   help="with --mix-balanced: how the groups are dealt (default switched; cyclic only to "
                        "reproduce runs made before 2026-11-29 or resume their checkpoints: its one shared "
                        "cycle can be fitted by an attacker)")


def run(args: argparse.Namespace) -> int:
    from visualmixer.train.loop import TrainConfig, TrainingDiverged, train

    cfg = TrainConfig(
        data=args.data, model=args.model, target_vfe=args.target_vfe, mode=args.mode,
        optimizer=args.optimizer, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
        seeds=args.seeds, device=args.device, out=args.out, data_root=args.data_root,
        channels=args.channels, image_size=args.image_size, train_size=args.train_size,
        test_size=args.test_size, weight_decay=args.weight_decay, region=args.region,
        secret_keys=args.secret_keys, target_acc=args.target_acc, resume=args.resume,
        progress=not args.no_progress, loader_workers=args.loader_workers, prefetch=args.prefetch,
        channels_last=args.channels_last,
        mix=args.mix, mix_grouping=args.groups, mix_share=args.mix_share, mix_balanced=args.mix_balanced,
        mix_design=args.mix_design,
        soft_labels=args.soft_labels, soft_label_epochs=args.soft_label_epochs,
        soft_label_file=args.soft_label_file, soft_label_temperature=args.soft_label_temperature,
        soft_label_features=args.soft_label_features, lr_schedule=args.lr_schedule, augment=args.augment,
    )
    with warnings.catch_warnings(record=True) as caught:  # the library's warnings, said with flags
        warnings.simplefilter("always", UserWarning)
        cfg.validate()
    for w in caught:
        print(f"visualmixer train: warning: {flags_for(str(w.message), 'train')}", file=sys.stderr)
    try:
        with warnings.catch_warnings():
            for w in caught:  # said above once (train() validates again)
                warnings.filterwarnings("ignore", message=re.escape(str(w.message)), category=w.category)
            metrics = train(cfg)
    except TrainingDiverged as exc:
        print(f"visualmixer train: error: {exc}", file=sys.stderr)
        return 3
    s = metrics["summary"]["final_test_acc"]
    print(json.dumps({
        "out": args.out,
        "target_vfe": args.target_vfe,
        "test_acc_mean": s["mean"],
        "test_acc_std": s["std"],
        "test_acc_per_seed": [r["final_test_acc"] for r in metrics["runs"]],
        "test_vfe": metrics["summary"]["test_vfe"].get("mean"),
    }, indent=2))
    return 0
