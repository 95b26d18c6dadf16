"""Accuracy cost of keyed region mixing ("mix") against in-region shuffling alone, on Fashion-MNIST.

The owner releases its training set protected as a whole (``visualmixer.core.mixing.mix``: same-class
groups of k, regions exchanged by the key, then shuffled inside to the target VFE); test images
are protected one by one with ``obfuscate``, as in deployment. A small CNN (``--model``: any of
``visualmixer.train.models.MODELS``, e.g. ``region-sorted``) is trained on the release and tested on
the protected test images; ``clean`` trains and tests on originals.

    python scripts/mix_utility.py --train 20000 --epochs 5 --seeds 0 --out out/mix-utility

``pixelate:4``, ``noise:0.3``, ``scramble:4`` (or any other audit spec without mixing, e.g. ``pixelate:7``)
are audit baselines (:func:`visualmixer.eval.methods.parse_method`,
one instance — one key for the keyed scramble — protects the training and the test images).
``*-online`` settings re-mix the whole training set at the start of every epoch (ids ``(index,
epoch)``: new exchanges every epoch, and new groups with ``random`` grouping), as ``visualmixer train
--mix K --mode online`` does. A ``-shareS`` part (e.g. ``mix4-random-share0.5``,
``mix4-random-share0.5-online``) exchanges only a keyed share S of the region positions in each
group (``mix(..., share=S)``, ``visualmixer train --mix K --mix-share S``); a ``-balanced`` part
(e.g. ``mix8-random-balanced``) deals the regions balanced (``mix(..., balanced=True)``,
``--mix-balanced``). Writes
``OUT/results.json`` (one row per setting and seed, appended as each finishes; finished rows are
skipped on a rerun) and prints a Markdown table. ``--tta M`` also scores the class probabilities
averaged over M protections of every test image (``accuracy_tta``). ``--test-collages D`` also
scores class-conditional test-time collages (``accuracy_collage*``, offline mixing settings): for
every test image and class c, D collages of the protected test image with released class-c
images (each region the test image's with probability 1/k), the class scored by the mean
log-probability of c on its own collages — alone, centred per class, and added to the direct
log-probabilities. ``--self-train U`` also fine-tunes (offline mixing settings) on the release plus
U unlabeled training images beyond ``--train``, each protected one by one as inference images
are, with the model's own confident labels (probability >= 0.9), for one epoch at lr 5e-4
(``accuracy_self_train``), beside the same epoch on the release alone (``accuracy_more_epoch``,
also for every offline setting with ``--more-epoch``). ``--soft-labels`` trains every protected
setting on the soft labels of a region-sorted teacher trained on the original images
(``visualmixer train --soft-labels region-sorted``); its rows carry ``soft_labels: true``; with
``--soft-label-features W`` also the teacher's region-grid features at weight W (``visualmixer
train --soft-label-features W``; the model must be ``region-sorted``; rows carry the weight).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from visualmixer.core.imageops import to_float
from visualmixer.core.keys import Key
from visualmixer.core.mixer import obfuscate
from visualmixer.core.mixing import mix
from visualmixer.core.regions import resolve_region
from visualmixer.data.datasets import load_fashion_mnist
from visualmixer.eval.methods import parse_method
from visualmixer.train.fit import evaluate_classifier, fit_classifier, init_model
from visualmixer.train.models import MODELS, build_model
from visualmixer.train.soft_labels import soft_label_loss, teacher_for

SETTINGS = ("clean", "shuffle", "mix2-similar", "mix4-similar", "mix4-random", "mix8-random",
            "mix2-similar-online", "mix4-similar-online", "mix2-random-online", "mix4-random-online",
            "pixelate:4", "noise:0.3", "scramble:4")


def mix_setting(setting: str) -> dict:
    """``"mixK-GROUPING[-shareS][-balanced][-online]"`` -> ``{"k", "grouping", "share", "balanced"}``
    (ValueError if not)."""
    parts = setting.split("-")
    if parts[-1] == "online":
        parts = parts[:-1]
    balanced = parts[-1] == "balanced"
    if balanced:
        parts = parts[:-1]
    share = 1.0
    if len(parts) == 3 and parts[2].startswith("share"):
        share = float(parts.pop()[5:])
    if len(parts) != 2 or not parts[0].startswith("mix") or not parts[0][3:].isdigit() \
            or parts[1] not in ("random", "similar") or not 0 < share <= 1:
        raise ValueError(f"not a mixing setting: {setting!r} (e.g. mix4-random, mix4-random-share0.5-online, "
                         "mix8-random-balanced)")
    return {"k": int(parts[0][3:]), "grouping": parts[1], "share": share, "balanced": balanced}


def setting_arg(text: str) -> str:
    """argparse type: a named setting, any ``mixK-GROUPING[-shareS][-balanced][-online]``, or any audit
    baseline spec (``pixelate:7``, ``noise:1.0``, ...)."""
    if text in SETTINGS:
        return text
    if ":" in text:
        if "/mix" in text:
            raise argparse.ArgumentTypeError(f"{text!r}: give mixing as a setting, e.g. mix4-random")
        try:
            parse_method(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    try:
        mix_setting(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; named settings: {', '.join(SETTINGS)}") from None
    return text


def protect_train(setting: str, x, y, key: Key, tau: float, region: int | None = None):
    ids = list(range(x.shape[0]))
    if setting == "clean":
        return x
    if setting == "shuffle":
        return obfuscate(x, key=key, ids=ids, target_vfe=tau, region=region).images
    return mix(x, y, key=key, ids=ids, target_vfe=tau, region=region, **mix_setting(setting)).images


_TEACHERS: dict = {}  # seed -> the owner's teacher (--soft-labels)


def run(setting: str, seed: int, args, train, test) -> dict:
    (x, y), (xt, yt) = train, test
    key, test_key = Key.from_seed(1000 + seed), Key.from_seed(2000 + seed)
    t0 = time.time()
    if ":" in setting:  # an audit baseline: one instance (one key for keyed methods) for train and test
        method = parse_method(setting, seed=3000 + seed)
        released, test_in = method(x), method(xt)
    else:
        test_in = xt if setting == "clean" else obfuscate(xt, key=test_key, ids=range(xt.shape[0]),
                                                           target_vfe=args.tau, region=args.region).images
        released = (protect_train(setting, x, y, key, args.tau, args.region) if not setting.endswith("-online")
                    else None)
    if setting.endswith("-online"):  # re-mixed every epoch: ids (index, epoch), new exchanges (and random groups)
        how = mix_setting(setting)

        def released(epoch: int):
            return mix(x, y, key=key, ids=[(i, epoch) for i in range(x.shape[0])], target_vfe=args.tau,
                       region=args.region, **how).images, y
    t_protect = time.time() - t0
    region = resolve_region(args.region, *x.shape[-2:])  # the protection's grid
    model = init_model(lambda: build_model(args.model, x.shape[1], 10, region=region), seed=seed)
    data = released if callable(released) else (released, y)
    loss_fn = None
    if args.soft_labels and setting != "clean":  # the owner's teacher, trained on the originals
        if seed not in _TEACHERS:  # one teacher per seed, shared by the settings of a run
            _TEACHERS[seed] = teacher_for("region-sorted", x, y, 10, region=region, epochs=args.epochs, seed=seed)
        loss_fn = soft_label_loss(_TEACHERS[seed], temperature=4.0, model=model,
                                  feature_weight=args.soft_label_features)
    fit = fit_classifier(model, data, epochs=args.epochs, batch_size=128, lr=1e-3, seed=seed, loss_fn=loss_fn)
    if hasattr(loss_fn, "remove"):  # the feature hooks: the teacher serves the next setting too
        loss_fn.remove()
    with torch.no_grad():
        _, acc = evaluate_classifier(model, test_in, yt)
    row = {"setting": setting, "seed": seed, "accuracy": acc, "protect_seconds": round(t_protect, 1),
           "train_loss": [e.loss for e in fit.epochs]}
    if args.tta > 1 and ":" not in setting and setting != "clean":
        row["accuracy_tta"] = _tta_accuracy(model, test_in, xt, yt, test_key, args)
    if args.test_collages and setting.startswith("mix") and not callable(released):
        row.update(_collage_accuracy(model, test_in, yt, released, y, mix_setting(setting)["k"], seed, args))
    if (args.self_train or args.more_epoch) and not callable(released):
        data = [("accuracy_more_epoch", (released, y))]
        if args.self_train and setting.startswith("mix"):
            data.insert(0, ("accuracy_self_train", _pseudo_labelled(model, released, y, seed, args)))
        row.update(_one_more_epoch(model, data, test_in, yt, seed))
    return row


def _logits(model, images) -> torch.Tensor:
    """The model's logits for ``images``, 1,000 at a time, in eval mode, without gradients."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(to_float(images[s : s + 1000])) for s in range(0, images.shape[0], 1000)])


def _pseudo_labelled(model, released, y, seed: int, args):
    """The release plus U unlabeled training images beyond ``--train``, protected one by one (the
    kind of image inference receives), with the model's labels where it is confident (>= 0.9)."""
    unlabeled = load_fashion_mnist("train").images[args.train : args.train + args.self_train]
    u_in = obfuscate(unlabeled, key=Key.from_seed(4000 + seed), ids=range(unlabeled.shape[0]),
                     target_vfe=args.tau, region=args.region).images
    confidence, guess = torch.softmax(_logits(model, u_in), dim=1).max(dim=1)
    keep = confidence >= 0.9
    return torch.cat([released, u_in[keep]]), torch.cat([y, guess[keep]])


def _one_more_epoch(model, data: list, test_in, yt, seed: int) -> dict:
    """Test accuracy after one more epoch at lr 5e-4 on each of ``data`` (name, (images, labels)),
    each from the same trained model."""
    state, out = copy.deepcopy(model.state_dict()), {}
    for name, pair in data:
        model.load_state_dict(state)
        fit_classifier(model, pair, epochs=1, batch_size=128, lr=5e-4, seed=seed + 100)
        with torch.no_grad():
            _, out[name] = evaluate_classifier(model, test_in, yt)
    return out


def _collage_accuracy(model, test_in, yt, released, y, k: int, seed: int, args) -> dict:
    """Class-conditional test-time collages (see the module docstring): the test image's
    regions (4 px) kept with probability 1/k, the others from random released images of class c."""
    g = torch.Generator().manual_seed(seed)
    n, r = test_in.shape[0], resolve_region(args.region, *test_in.shape[-2:])
    rows, cols = test_in.shape[2] // r, test_in.shape[3] // r
    pools = [released[y == c] for c in range(10)]

    def log_probs(images):
        return torch.log_softmax(_logits(model, images), dim=1).double()

    score = torch.zeros(n, 10, dtype=torch.float64)
    for _ in range(args.test_collages):
        for c, pool in enumerate(pools):
            other = pool[torch.randint(0, len(pool), (n,), generator=g)]
            keep = torch.rand(n, 1, rows, cols, generator=g) < 1 / k
            keep = keep.repeat_interleave(r, 2).repeat_interleave(r, 3)
            score[:, c] += log_probs(torch.where(keep, test_in, other))[:, c]
    score /= args.test_collages
    centred = score - score.mean(dim=0, keepdim=True)  # each class's own bias removed
    direct = log_probs(test_in)

    def accuracy(s):
        return float((s.argmax(dim=1) == yt).double().mean())

    return {"accuracy_collage": accuracy(score), "accuracy_collage_centred": accuracy(centred),
            "accuracy_direct_plus_collage": accuracy(direct + 0.5 * centred)}


def _tta_accuracy(model, first, xt, yt, test_key: Key, args) -> float:
    """Accuracy of the class probabilities averaged over ``args.tta`` protections of every test
    image: the usual one (ids ``i``) and ``tta - 1`` more (ids ``(i, m)``), as a receiver
    holding several protected copies of each test image could average them."""
    total = None
    for m in range(args.tta):
        views = first if m == 0 else obfuscate(xt, key=test_key, ids=[(i, m) for i in range(xt.shape[0])],
                                               target_vfe=args.tau, region=args.region).images
        p = torch.softmax(_logits(model, views), dim=1)
        total = p if total is None else total + p
    return float((total.argmax(dim=1) == yt).double().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=20000, help="training images (default 20000; 60000 = all)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--tau", type=float, default=0.5, help="target VFE of the in-region shuffle")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), type=setting_arg,
                    help="named settings or mixK-GROUPING[-shareS][-balanced][-online] (default: the named ones)")
    ap.add_argument("--out", type=Path, default=Path("out/mix-utility"))
    ap.add_argument("--region", type=int, default=None, metavar="R",
                    help="region side of the shuffle and the mixing (default: the size's, 4 px at 28x28)")
    ap.add_argument("--tta", type=int, default=1, metavar="M",
                    help="also score the class probabilities averaged over M protections of each test image")
    ap.add_argument("--test-collages", type=int, default=0, metavar="D",
                    help="also score class-conditional test-time collages, D per test image and class")
    ap.add_argument("--self-train", type=int, default=0, metavar="U",
                    help="also fine-tune on U pseudo-labelled, singly protected unlabeled images (and a control)")
    ap.add_argument("--more-epoch", action="store_true",
                    help="also score one more epoch at lr 5e-4 on the release (offline settings)")
    ap.add_argument("--model", choices=list(MODELS), default="cnn",
                    help="the classifier (visualmixer.train.models; default cnn, the small CNN)")
    ap.add_argument("--soft-labels", action="store_true",
                    help="train on the owner's soft labels: a region-sorted teacher trained on the original images "
                         "(as visualmixer train --soft-labels region-sorted; temperature 4)")
    ap.add_argument("--soft-label-features", type=float, default=0.0, metavar="W",
                    help="with --soft-labels: also fit the teacher's region-grid features at weight W "
                         "(--model region-sorted)")
    args = ap.parse_args()
    if args.soft_label_features and not (args.soft_labels and args.model == "region-sorted"):
        ap.error("--soft-label-features needs --soft-labels and --model region-sorted")
    tr, te = load_fashion_mnist("train"), load_fashion_mnist("test")
    train = (tr.images[: args.train], tr.labels[: args.train])
    test = (te.images, te.labels)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    def this_run(r: dict) -> bool:  # rows of this model and labels: skipped when done, summed up below
        return (r.get("model", "cnn") == args.model and r.get("soft_labels", False) == args.soft_labels
                and r.get("soft_label_features", 0.0) == args.soft_label_features)

    done = {(r["setting"], r["seed"]) for r in rows if this_run(r)}
    for seed in args.seeds:
        for setting in args.settings:
            if (setting, seed) in done:
                continue
            row = run(setting, seed, args, train, test)
            row.update(train_size=args.train, epochs=args.epochs, tau=args.tau, region=args.region, model=args.model,
                       soft_labels=args.soft_labels, soft_label_features=args.soft_label_features)
            rows.append(row)
            path.write_text(json.dumps(rows, indent=1))
            tta = f", averaged over {args.tta} protections {row['accuracy_tta']:.4f}" if "accuracy_tta" in row else ""
            if "accuracy_self_train" in row:
                tta += f", self-trained {row['accuracy_self_train']:.4f}"
            if "accuracy_more_epoch" in row:
                tta += f", one more epoch at lr 5e-4 on the release {row['accuracy_more_epoch']:.4f}"
            if "accuracy_collage" in row:
                tta += (f", test-time collages {row['accuracy_collage']:.4f} (centred "
                        f"{row['accuracy_collage_centred']:.4f}, "
                        f"with the direct {row['accuracy_direct_plus_collage']:.4f})")
            print(f"{setting:14s} seed {seed}: accuracy {row['accuracy']:.4f}{tta}", flush=True)
    rows = [r for r in rows if this_run(r)]
    clean = [r["accuracy"] for r in rows if r["setting"] == "clean"]
    base = statistics.mean(clean) if clean else float("nan")
    print("\n| setting | accuracy (mean over seeds) | loss vs clean (points) | seeds |\n|---|---|---|---|")
    for s in args.settings:
        acc = [r["accuracy"] for r in rows if r["setting"] == s]
        if acc:
            m = statistics.mean(acc)
            print(f"| {s} | {100 * m:.2f} % | {100 * (base - m):.2f} | {len(acc)} |")


if __name__ == "__main__":
    main()
