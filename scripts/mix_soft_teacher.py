"""Which teacher for soft labels: the region-sorted model on the released collages, or the small CNN
on the owner's collages before the in-region shuffle (docs/privacy.md §4c, "Soft labels").

The owner holds the originals and the key, so it can label each collage as it is released (shuffled
inside its regions; only a shuffle-blind model reads that as the original) or as it was before the
shuffle (``mix(..., target_vfe=0)`` gives the same collages unshuffled), which any model can read —
e.g. the small CNN, more accurate on whole images. The student (region-sorted) is trained on the
released collages with the teacher's probabilities (T = 4) and tested on test images protected one
by one; keys and seeds as in ``scripts/mix_utility.py``.

    OMP_NUM_THREADS=1 python scripts/mix_soft_teacher.py --teacher cnn --seeds 0 1
"""

from __future__ import annotations

import argparse
import json

import torch

from visualmixer.core.imageops import to_float
from visualmixer.core.keys import Key
from visualmixer.core.mixer import obfuscate
from visualmixer.core.mixing import mix
from visualmixer.data.datasets import load_fashion_mnist
from visualmixer.train.distill import distill_loss
from visualmixer.train.fit import evaluate_classifier, fit_classifier, init_model
from visualmixer.train.models import build_model


def run(seed: int, args, train, test) -> dict:
    (x, y), (xt, yt) = train, test
    key, test_key = Key.from_seed(1000 + seed), Key.from_seed(2000 + seed)
    test_in = obfuscate(xt, key=test_key, ids=range(xt.shape[0]), target_vfe=args.tau).images
    how = dict(key=key, ids=range(len(x)), k=args.k, balanced=True)
    released = mix(x, y, target_vfe=args.tau, **how).images
    labelled = released if args.teacher == "region-sorted" else mix(x, y, target_vfe=0.0, **how).images
    teacher = init_model(lambda: build_model(args.teacher, x.shape[1], 10, region=4), seed=seed)
    fit_classifier(teacher, (x, y), epochs=args.epochs, batch_size=128, lr=1e-3, seed=seed)
    teacher.eval()
    with torch.no_grad():
        teacher_acc = evaluate_classifier(teacher, xt, yt)[1]
        targets = torch.cat([teacher(to_float(labelled[i : i + 1000])) for i in range(0, len(x), 1000)])
    on_collages = float((targets.argmax(1) == y).float().mean())

    def loss_fn(logits, index, inputs):  # the "labels" are image indices: each image's own targets
        return distill_loss(logits, targets[index], None, 4.0)

    student = init_model(lambda: build_model("region-sorted", x.shape[1], 10, region=4), seed=seed)
    fit_classifier(student, (released, torch.arange(len(x))), epochs=args.epochs, batch_size=128, lr=1e-3,
                   seed=seed, loss_fn=loss_fn)
    with torch.no_grad():
        acc = evaluate_classifier(student, test_in, yt)[1]
    return {"teacher": args.teacher, "k": args.k, "seed": seed, "tau": args.tau, "train": args.train,
            "epochs": args.epochs, "teacher_clean_acc": teacher_acc, "teacher_right_on_collages": on_collages,
            "student_acc": acc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", choices=("region-sorted", "cnn"), default="cnn")
    ap.add_argument("--k", type=int, default=16, help="balanced random groups of K (default 16)")
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--json", default=None, help="append one JSON line per seed to this file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tr, te = load_fashion_mnist("train"), load_fashion_mnist("test")
    train, test = (tr.images[: args.train], tr.labels[: args.train]), (te.images, te.labels)
    for seed in args.seeds:
        row = run(seed, args, train, test)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
