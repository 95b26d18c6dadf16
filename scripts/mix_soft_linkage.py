"""Do released soft labels point to a collage's sources? A linkage probe (docs/privacy.md §4c).

The owner mixes its training set (Fashion-MNIST, ``--train`` images, balanced groups of ``--k``,
target 1.0), trains the region-sorted teacher on the originals and releases every collage with
the teacher's logits (what ``visualmixer soft-labels`` writes). The attacker holds ``--victims``
of the owner's originals and the release, and for each victim ranks the released collages of the
victim's class (the class is public: the folder) by how close their released probabilities are to
a model's probabilities on the victim (L2 between log-probabilities). A hit: the top collage holds
regions of the victim. Two attacker models: its own (the region-sorted student fit to the release
and its soft labels, all it can train) and, as a bound, the owner's teacher itself. Chance: the
victim's group's collages among the class's (k / class size). With ``--augment hflip`` the teacher
and the student train with mirrored region grids and the release carries the mirrored collages'
logits too (``visualmixer soft-labels --augment hflip``); the attacker then compares both views
(the victim and its mirror image against each collage and its mirror image). With ``--features``
the release also carries the teacher's region-grid features (``visualmixer soft-labels
--features``; the attacker's student is trained on them, ``--soft-label-features 1``), and the
attacker also ranks the collages by them: by the L2 distance between whole feature maps
(``*_features``) and by the closest single grid position (``*_features_position``: a source's
region sits at a few positions of its collages, each at its own place); ``pixels_position`` is the
same ranking on the collages' own pixels (each region's sorted values, what A8 matches; blank
regions of the victim left out), the linkage the release allows without any soft label.

    OMP_NUM_THREADS=1 python scripts/mix_soft_linkage.py --json docs/data/mix-soft-linkage.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from visualmixer.core.keys import Key
from visualmixer.core.mixing import mix
from visualmixer.data.datasets import load_fashion_mnist
from visualmixer.train.augment import AUGMENTATIONS, make_augment
from visualmixer.train.fit import channel_normaliser, fit_classifier, init_model, normalise
from visualmixer.train.models import build_model
from visualmixer.train.soft_labels import release_features, release_logits, soft_target_loss, teacher_for


def top1_hits(model_logp: torch.Tensor, released_logp: torch.Tensor, victims: torch.Tensor, labels: torch.Tensor,
              sources: torch.Tensor) -> float:
    """Share of victims whose nearest released collage of their class holds one of their regions."""
    hits = 0
    for v, lp in zip(victims.tolist(), model_logp, strict=True):
        same = torch.nonzero(labels == labels[v]).flatten()
        best = same[(released_logp[same] - lp).pow(2).sum(1).argmin()]
        hits += int((sources[best] == v).any())
    return hits / len(victims)


def feature_hits(model_feats: torch.Tensor, released_feats: torch.Tensor, victims: torch.Tensor,
                 labels: torch.Tensor, sources: torch.Tensor, *, per_position: bool, skip_flat: bool = False) -> float:
    """:func:`top1_hits` on features ``(N, C, h, w)``: the whole map's L2 distance, or with
    ``per_position`` the smallest distance between the victim's and a collage's features at one grid position
    (with ``skip_flat`` only at positions where the victim's values are not all equal: blank regions match
    every blank region of every collage)."""
    hits = 0
    for v, f in zip(victims.tolist(), model_feats.float(), strict=True):
        same = torch.nonzero(labels == labels[v]).flatten()
        diff = (released_feats[same].float() - f).pow(2).sum(1)  # (n, h, w)
        if skip_flat and bool((f.amax(0) > f.amin(0)).any()):
            diff = diff.masked_fill(~(f.amax(0) > f.amin(0)), float("inf"))
        score = diff.flatten(1).min(1).values if per_position else diff.flatten(1).sum(1)
        hits += int((sources[same[score.argmin()]] == v).any())
    return hits / len(victims)


def region_values(images: torch.Tensor, r: int = 4) -> torch.Tensor:
    """Each ``r``-px region's sorted values ``(N, r², h, w)``: what the in-region shuffle keeps."""
    n, c, h, w = images.shape
    blocks = images[:, :, : h // r * r, : w // r * r].reshape(n, c, h // r, r, w // r, r).float()
    return blocks.permute(0, 1, 3, 5, 2, 4).reshape(n, c * r * r, h // r, w // r).sort(dim=1).values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--victims", type=int, default=2000)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=5, help="the teacher's and the attacker's student's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--augment", nargs="*", default=[], choices=tuple(AUGMENTATIONS))
    ap.add_argument("--features", action="store_true", help="the release carries the teacher's features too")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    t0 = time.time()
    owner = load_fashion_mnist("train").subset(args.train, seed=args.seed)
    x, y = owner.images, owner.labels
    res = mix(x, y, key=Key.from_seed(1000 + args.seed), ids=range(len(x)), k=args.k, target_vfe=1.0, balanced=True)
    mean, std = channel_normaliser(x)

    def prepare(b):
        return normalise(b, mean, std)

    def views(images):  # the image, then each augmentation's view of it
        return [images, *(AUGMENTATIONS[name](images, 4) for name in args.augment)]

    teacher = teacher_for("region-sorted", x, y, 10, region=4, epochs=args.epochs, seed=args.seed, prepare=prepare,
                          augment=make_augment(args.augment, region=4, seed=args.seed))
    released = [release_logits(teacher, v, prepare=prepare) for v in views(res.images)]
    student = init_model(lambda: build_model("region-sorted", 1, 10, region=4), seed=args.seed + 1)
    targets = torch.stack(released, 1) if args.augment else released[0]
    feats = release_features(teacher, res.images, prepare=prepare) if args.features else None
    if args.features:
        targets = torch.cat([targets, feats.float().flatten(1)], 1)
    loss_fn = soft_target_loss(4.0, model=student, feature_weight=1.0 if args.features else 0.0)
    fit_classifier(student, (res.images, targets), epochs=args.epochs, lr=1e-3, batch_size=128, seed=args.seed + 1,
                   prepare=prepare, loss_fn=loss_fn, augment=make_augment(args.augment, region=4, seed=args.seed + 1))
    if hasattr(loss_fn, "remove"):
        loss_fn.remove()
    student.eval()
    victims = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))[: args.victims]
    released_logp = torch.cat([r.log_softmax(1) for r in released], 1)
    out = {"k": args.k, "train": args.train, "victims": args.victims, "epochs": args.epochs, "seed": args.seed,
           "augment": args.augment, "features": args.features, "chance": args.k / float((y == 0).sum())}
    for name, model in (("attacker_student", student), ("owner_teacher", teacher)):
        with torch.no_grad():
            logp = torch.cat([release_logits(model, v, prepare=prepare).log_softmax(1) for v in views(x[victims])], 1)
        out[name] = top1_hits(logp, released_logp, victims, y, res.sources)
        if args.features:
            with torch.no_grad():
                mine = release_features(model, x[victims], prepare=prepare)
            for per_position, suffix in ((False, "features"), (True, "features_position")):
                out[f"{name}_{suffix}"] = feature_hits(mine, feats, victims, y, res.sources, per_position=per_position)
    if args.features:
        out["pixels_position"] = feature_hits(region_values(x[victims]), region_values(res.images), victims, y,
                                              res.sources, per_position=True, skip_flat=True)
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
