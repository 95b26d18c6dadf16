"""``visualmixer fl``: federated training on locally obfuscated images with Flower's deployment engine."""

from __future__ import annotations

import argparse
import json
import math
import sys

from visualmixer.cli._common import (
    add_augment_option,
    add_mix_shape_options,
    add_soft_label_options,
    flags_for,
    int_type,
    seed_int,
    target_or_none,
)


def _partition(text: str) -> str:
    from visualmixer.fl.partition import parse_partition

    try:
        parse_partition(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


#: argparse types: a number of images (0: the whole split), a TCP port.
_size = int_type(0, allowed="a number of images >= 0 (0: all)")
_port = int_type(1, 65535, allowed="a port from 1 to 65535")


def _positive_number(text: str) -> float:
    """argparse type: a finite number > 0 (``--lr``, ``--timeout``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _directory(text: str) -> str:
    """argparse type: an existing directory."""
    from pathlib import Path

    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return text


def add_parser(subparsers) -> argparse.ArgumentParser:
    from visualmixer.cli._common import positive_int

    p = subparsers.add_parser(
        "fl",
        help="federated learning (Flower, FedAvg) on locally obfuscated images, on loopback",
        description=(
            "Start a Flower SuperLink and N SuperNodes on 127.0.0.1 (free ports picked at run time), "
            "run the VisualMixer app (each client obfuscates its own Fashion-MNIST partition with its "
            "own key and trains the small CNN; the server aggregates with FedAvg and evaluates on "
            "obfuscated test images), write DIR/history.json (accuracy per round) and stop every "
            "process it started. Needs `pip install 'visualmixer[fl]'`. The default client keys are "
            "derived from --seed (NOT secret); --key-dir uses DIR/client<K>.key files."
        ),
    )
    p.add_argument("--clients", type=positive_int, default=4, help="number of SuperNodes (default 4)")
    p.add_argument("--rounds", type=positive_int, default=3, help="FedAvg rounds (default 3)")
    p.add_argument("--partition", type=_partition, default="iid", help="iid | dirichlet:ALPHA (default iid)")
    p.add_argument("--target-vfe", type=target_or_none, default=0.5, help="target VFE in [0, 1], or 'none' (clean FL)")
    p.add_argument("--mode", choices=("offline", "online"), default="offline",
                   help="offline: obfuscate once (ids i); online: re-obfuscate each round (ids (i, round))")
    p.add_argument("--train-size", type=_size, default=6000, help="pooled training images (0: all 60000)")
    p.add_argument("--test-size", type=_size, default=2000, help="test images (0: all 10000)")
    p.add_argument("--mix", type=int, default=0, metavar="K",
                   help="each client mixes regions within same-class groups of K (>= 2) of its own images "
                        "before the in-region shuffle (default 0: no mixing)")
    add_mix_shape_options(p)
    p.add_argument("--model", default="cnn", metavar="{cnn,region-sorted}",
                   help="the shared model: the small CNN, or the region-sorted CNN (blind to the in-region "
                        "shuffle, the model for --mix; default: %(default)s)")
    add_soft_label_options(p, epochs_default="--rounds × --local-epochs")
    add_augment_option(p, help="training-time augmentation of every client's batches (and its --soft-labels "
                               "teacher's): hflip mirrors an image's region grid left-right with probability 0.5. "
                               "Default: none")
    p.add_argument("--local-epochs", type=positive_int, default=1)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=_positive_number, default=None,
                   help="client SGD learning rate (momentum 0.9; default 0.05, 0.01 with --soft-labels)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--data-root", type=_directory, default=None, help="Fashion-MNIST IDX directory")
    p.add_argument("--key-dir", default=None, help="directory with client0.key … (made with `visualmixer keygen`)")
    p.add_argument("--superlink-port", type=_port, default=None,
                   help="fixed SuperLink port, 1-65535 (default: a free one)")
    p.add_argument("--timeout", type=_positive_number, default=1800.0,
                   help="seconds (> 0) before everything is stopped (default 1800)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from visualmixer.fl import FlowerMissingError
    from visualmixer.fl.deploy import PortInUseError, run_loopback

    keys = None
    if args.key_dir:
        keys = [str(Path(args.key_dir) / f"client{k}.key") for k in range(args.clients)]
        missing = [k for k in keys if not Path(k).is_file()]
        if missing:
            raise FileNotFoundError(f"--key-dir: missing {', '.join(missing)}")
    try:
        res = run_loopback(
            args.out, clients=args.clients, rounds=args.rounds, partition=args.partition,
            target_vfe=args.target_vfe, mode=args.mode, train_size=args.train_size, test_size=args.test_size,
            local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, mix=args.mix,
            mix_share=args.mix_share, mix_balanced=args.mix_balanced, model=args.model,
            soft_labels=args.soft_labels, soft_label_epochs=args.soft_label_epochs,
            soft_label_temperature=args.soft_label_temperature, soft_label_features=args.soft_label_features,
            augment=args.augment, data_root=args.data_root, superlink_port=args.superlink_port, timeout=args.timeout,
            key_paths=keys,
        )
    except FlowerMissingError as exc:
        print(f"visualmixer fl: error: {exc}", file=sys.stderr)
        return 2
    except PortInUseError as exc:
        print(f"visualmixer fl: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError) as exc:
        # the first line is the message (library names -> flags); the lines after it quote a log verbatim
        message, newline, excerpt = str(exc).partition("\n")
        print(f"visualmixer fl: error: {flags_for(message, 'fl')}{newline}{excerpt}", file=sys.stderr)
        return 1
    rows = [{"round": r["round"], "accuracy": round(r["accuracy"], 4)} for r in res.history["rounds"]]
    print(json.dumps({"out": str(res.out / "history.json"), "seconds": round(res.seconds, 1), "rounds": rows}))
    return 0
