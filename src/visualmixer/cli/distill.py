"""``visualmixer distill``: a teacher trained on obfuscated images teaches a smaller student on obfuscated images."""

from __future__ import annotations

import argparse
import json
import math
import sys

from visualmixer.cli._common import nonnegative_int, target_or_none


def add_parser(subparsers) -> argparse.ArgumentParser:
    from visualmixer.cli._common import positive_int, positive_number

    p = subparsers.add_parser(
        "distill",
        help="knowledge distillation on obfuscated images (teacher -> smaller student)",
        description=(
            "Train the small CNN (teacher) on obfuscated training images, then distill it into a "
            "~26k-parameter student using only obfuscated images (soft labels at temperature T, "
            "loss alpha*T^2*KL + (1-alpha)*CE). Also trains the same student from labels alone, and "
            "(default) repeats everything on clean images for comparison. Test images are obfuscated "
            "with their own key. Writes DIR/metrics.json. Keys are derived from the seed (NOT secret)."
        ),
    )
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist (default) or another loader name")
    p.add_argument("--data-root", default=None)
    p.add_argument("--target-vfe", type=target_or_none, default=0.5)
    p.add_argument("--no-clean", dest="compare_clean", action="store_false",
                   help="skip the clean-data comparison")
    p.add_argument("--train-size", type=nonnegative_int, default=6000, help="training images (0: all)")
    p.add_argument("--test-size", type=nonnegative_int, default=2000, help="test images (0: all)")
    p.add_argument("--teacher-epochs", type=positive_int, default=3)
    p.add_argument("--student-epochs", type=positive_int, default=3)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--lr", type=positive_number, default=1e-3, help="Adam learning rate")
    p.add_argument("--temperature", "-T", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.7, help="weight of the soft-label term")
    p.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[0], help="one run per seed, each once")
    p.add_argument("--out", required=True)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from visualmixer.train.config import check_seeds
    from visualmixer.train.distill import DistillConfig, run_distill
    from visualmixer.train.fit import TrainingDiverged

    if not 0 < args.temperature < math.inf:  # (NaN fails too)
        raise ValueError(f"--temperature {args.temperature} is not allowed: give a number > 0")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha {args.alpha} is not allowed: give a number in [0, 1]")
    cfg = DistillConfig(data=args.data, data_root=args.data_root, target_vfe=args.target_vfe,
                        compare_clean=args.compare_clean, train_size=args.train_size, test_size=args.test_size,
                        teacher_epochs=args.teacher_epochs, student_epochs=args.student_epochs,
                        batch_size=args.batch_size, lr=args.lr, temperature=args.temperature, alpha=args.alpha,
                        seeds=check_seeds(args.seeds, "--seeds"), out=args.out)
    try:
        res = run_distill(cfg)
    except TrainingDiverged as exc:
        print(f"visualmixer distill: error: {exc} (try a smaller --lr)", file=sys.stderr)
        return 3
    print(json.dumps({name: {m: round(v["mean"], 4) for m, v in g.items()} for name, g in res["summary"].items()}))
    return 0
