"""``visualmixer soft-labels SRC DST``: the owner's soft labels for a release, as a file beside it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from visualmixer.cli._common import add_augment_option, positive_int, positive_number, seed_int

EXAMPLES = """\
examples:
  visualmixer obfuscate train/ shared/vm/train --key secret/k.key --target-vfe 1.0 --mix 64 --mix-balanced
  visualmixer obfuscate test/ shared/vm/test --key secret/k.key --target-vfe 1.0
  visualmixer soft-labels train/ shared/vm/train --epochs 10
      trains the owner's teacher (a region-sorted model, blind to the in-region shuffle) on the
      originals in train/, then writes shared/vm/train/soft-labels.csv: one row per released image,
      its path and the teacher's logits. Ship it with the release; whoever trains on it runs
      visualmixer train --data imagefolder:shared/vm --target-vfe none --model region-sorted \\
          --soft-label-file shared/vm/train/soft-labels.csv
  visualmixer soft-labels train/ shared/vm/train --epochs 10 --features
      also writes shared/vm/train/soft-labels.features.npy (the teacher's region-grid features of
      every released image); train with --soft-label-file ... --soft-label-features 1 to match them

  SRC and DST are class folders (SRC/<class>/<image>) with the same classes and one image size
  (--image-size resizes both). Give the --region the release was made with if it was not the
  default. No key is needed; SRC is only read, DST only gains the file(s), which hold no pixel.

exit status: 0 written, 2 usage error (classes or sizes differ, FILE exists without --overwrite).
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    from visualmixer.train.fit import LR_SCHEDULES
    from visualmixer.train.soft_labels import SHUFFLE_BLIND_MODELS

    p = subparsers.add_parser(
        "soft-labels",
        help="the owner's soft labels for a protected release (a teacher trained on the originals)",
        description="Train a teacher blind to the in-region shuffle on the original images SRC and write "
        "its logits on every protected image of the release DST to a CSV file (default "
        "DST/soft-labels.csv), for `visualmixer train --soft-label-file`.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="the original images (SRC/<class>/<image>)")
    p.add_argument("dst", metavar="DST", help="the protected release of SRC (made by visualmixer obfuscate)")
    p.add_argument("--out", default=None, metavar="FILE", help="the soft-label file (default: DST/soft-labels.csv)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing FILE")
    p.add_argument("--region", type=positive_int, default=None, metavar="N",
                   help="the release's region side (default: the size's default, as visualmixer obfuscate)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3, help="read the images as grey or RGB")
    p.add_argument("--image-size", type=positive_int, default=None, metavar="N", help="resize every image to N×N")
    p.add_argument("--model", default="region-sorted", choices=SHUFFLE_BLIND_MODELS,
                   help="the teacher (default: %(default)s; region-sorted-channels reads each colour channel's "
                        "values apart: better on colour images; the same on grey ones)")
    p.add_argument("--epochs", type=positive_int, default=10, metavar="N", help="the teacher's epochs (default: 10)")
    p.add_argument("--lr", type=positive_number, default=1e-3, help="the teacher's Adam learning rate (default: 1e-3)")
    p.add_argument("--lr-schedule", default="constant", choices=tuple(LR_SCHEDULES), help="default: constant")
    p.add_argument("--batch-size", type=positive_int, default=128, metavar="B")
    p.add_argument("--seed", type=seed_int, default=0, help="the teacher's initialisation and batch order")
    add_augment_option(p, help="train the teacher with this augmentation too and write its logits of each "
                               "released image's view (hflip: mirrored) as well, for `visualmixer train --augment` "
                               "(default: none)")
    p.add_argument("--features", action="store_true",
                   help="also write the teacher's region-grid features of every released image beside FILE "
                        "(<FILE stem>.features.npy, float16, 128×7×7 values per 28² image), for `visualmixer "
                        "train --soft-label-features` (not with --augment)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from visualmixer.data.filesets import load_image_folder
    from visualmixer.train.config import resolve_device
    from visualmixer.train.soft_labels import features_path, owner_soft_labels, write_soft_labels

    src, dst = Path(args.src).resolve(), Path(args.dst).resolve()
    out = Path(args.out) if args.out else Path(args.dst) / "soft-labels.csv"
    if src == dst:
        raise ValueError("SRC and DST are one folder: give the originals and their protected release")
    if out.resolve().is_relative_to(src):
        raise ValueError(f"--out {out} is inside SRC: the originals' folder is never written to")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists: pass --overwrite to replace it, or choose another --out")
    if args.features and args.augment:
        raise ValueError("--features with --augment: the features are written for the images as they are; "
                         "give one of the two")
    device = resolve_device(args.device)
    kw = dict(split="train", test_fraction=0.0, size=args.image_size, channels=args.channels)
    originals, release = load_image_folder(src, **kw), load_image_folder(dst, **kw)
    made = owner_soft_labels(originals, release, model=args.model, region=args.region, epochs=args.epochs, lr=args.lr,
                             lr_schedule=args.lr_schedule, batch_size=args.batch_size, seed=args.seed,
                             device=device, progress=not args.no_progress, augment=args.augment,
                             features=args.features)
    logits, features = made if args.features else (made, None)
    write_soft_labels(out, release.files, release.classes, logits, views=args.augment, features=features)
    agree = float((logits.reshape(len(release), -1, len(release.classes))[:, 0].argmax(1) == release.labels)
                  .float().mean())
    print(json.dumps({"out": str(out), "images": len(release), "classes": len(release.classes),
                      "teacher_agrees_with_folder_label": round(agree, 4),
                      **({"features": str(features_path(out))} if args.features else {})}, indent=2))
    return 0
