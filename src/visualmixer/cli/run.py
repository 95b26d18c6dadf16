"""``visualmixer run``: the main job on the built-in data (the target of ``make run``).

1. Obfuscates the built-in photos at a few VFE targets with a fresh key, checks that restore is
   exact, prints the achieved VFE per image and target, writes a picture grid and a JSON.
2. Trains the small CNN clean and obfuscated on Fashion-MNIST (a few epochs on a subset).
3. Audits VisualMixer against the noise, blur, pixelation and block-scrambling baselines.

Everything lands in ``--out`` (default ``out/run``), linked from ``index.html``.
"""

from __future__ import annotations

import argparse
import html
import json
import time
from pathlib import Path

DEFAULT_TARGETS = (0.3, 0.5, 0.7)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: obfuscate built-in photos, train clean vs obfuscated, quick privacy audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: visualmixer run --out out/run --targets 0.3 0.5 0.7",
    )
    p.add_argument("--out", default="out/run", help="output folder (default: out/run)")
    p.add_argument("--targets", type=float, nargs="+", default=list(DEFAULT_TARGETS),
                   help="VFE targets for the photo grid (default: 0.3 0.5 0.7)")
    p.add_argument("--size", type=int, default=224, help="side of the square photo crops (default: 224)")
    p.add_argument("--skip-train", action="store_true", help="skip the clean-vs-obfuscated training")
    p.add_argument("--skip-audit", action="store_true", help="skip the quick privacy audit")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default: 2)")
    p.add_argument("--quiet", action="store_true", help="print only the summary tables")
    p.set_defaults(func=run)


def photo_grid(out_dir: Path, targets, size: int = 224) -> dict:
    """Obfuscate the built-in photos at each target; write ``grid.png`` and ``photos.json``."""
    import torch

    from visualmixer.core.keys import Key
    from visualmixer.core.mixer import obfuscate, restore
    from visualmixer.core.vfe import vfe
    from visualmixer.data.samples import builtin_photos

    names, x = builtin_photos(size)
    key = Key.generate()  # fresh and never stored: this run only demonstrates
    ids = [f"builtin/{n}" for n in names]
    original = vfe(x)
    rows = {n: {"original": round(float(v), 3)} for n, v in zip(names, original, strict=True)}
    outputs, exact = [], True
    timings = {}
    for t in targets:
        t0 = time.perf_counter()
        res = obfuscate(x, key=key, ids=ids, target_vfe=t)
        timings[str(t)] = time.perf_counter() - t0
        back = restore(res.images, res.plans, key=key, ids=ids)
        exact &= bool(torch.equal(back, x))
        outputs.append(res.images)
        for n, v, lv in zip(names, res.vfe.tolist(), res.plans.levels.flatten(1), strict=True):
            rows[n][str(t)] = round(v, 3)
            rows[n][f"levels@{t}"] = {int(k): int(c) for k, c in enumerate(lv.long().bincount()) if c}
    _save_grid(out_dir / "grid.png", names, x, outputs, targets, original, rows)
    result = {
        "images": rows,
        "targets": list(targets),
        "restore_bit_exact": exact,
        "size": size,
        "seconds_per_target": {k: round(v, 3) for k, v in timings.items()},
        "note": "VFE per image (SPEC §3); targets are met when every value >= its target",
    }
    (out_dir / "photos.json").write_text(json.dumps(result, indent=2))
    return result


def _save_grid(path: Path, names, x, outputs, targets, original, rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 1 + len(outputs)
    fig, axes = plt.subplots(len(names), cols, figsize=(2.2 * cols, 2.3 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        panels = [x[i]] + [o[i] for o in outputs]
        titles = [f"{name}\noriginal VFE {float(original[i]):.2f}"] + [
            f"target {t}\nVFE {rows[name][str(t)]:.2f}" for t in targets
        ]
        for j, (img, title) in enumerate(zip(panels, titles, strict=True)):
            ax = axes[i][j]
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _table(rows: dict, targets) -> str:
    head = f"{'image':<12}{'original':>10}" + "".join(f"{'@' + str(t):>10}" for t in targets)
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(f"{name:<12}{r['original']:>10.3f}" + "".join(f"{r[str(t)]:>10.3f}" for t in targets))
    return "\n".join(lines)


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda s: None) if args.quiet else print
    for t in args.targets:
        if not 0 <= t <= 1:
            raise ValueError(f"--targets must be in [0, 1], got {t}")
    failures = []

    log("[1/3] obfuscating the built-in photos ...")
    photos = photo_grid(out, args.targets, args.size)
    print("Achieved VFE per image and target (higher = less recognisable):")
    print(_table(photos["images"], args.targets))
    print(f"restore bit-exact: {photos['restore_bit_exact']}")
    if not photos["restore_bit_exact"]:
        failures.append("restore was not bit-exact")

    sections = [("Photos obfuscated at several VFE targets", "grid.png", "photos.json",
                 _table(photos["images"], args.targets) + f"\nrestore bit-exact: {photos['restore_bit_exact']}")]
    if not args.skip_train:
        log("[2/3] training the small CNN clean and obfuscated on Fashion-MNIST ...")
        try:
            from visualmixer.train import quick_compare

            summary = quick_compare(out / "train", targets=(None, 0.5), epochs=args.epochs,
                                    progress=not args.quiet)
            md = out / "train" / "accuracy.md"
            text = md.read_text() if md.exists() else json.dumps(summary, indent=1, default=str)[:2000]
            print(text)
            sections.append(("Training clean vs obfuscated", "train/curves.png", "train/accuracy.json", text))
        except (ImportError, FileNotFoundError) as exc:
            failures.append(f"training skipped: {exc}")
            print(f"training skipped: {exc}")
    if not args.skip_audit:
        log("[3/3] quick privacy audit against baselines ...")
        try:
            from visualmixer.eval.report import quick_audit

            page = quick_audit(out / "audit", target_vfe=0.5, progress=not args.quiet, log=log)
            sections.append(("Privacy audit (quick)", None, str(Path(page).relative_to(out)), None))
        except (ImportError, FileNotFoundError) as exc:
            failures.append(f"audit skipped: {exc}")
            print(f"audit skipped: {exc}")

    _write_index(out / "index.html", sections)
    print(f"wrote {out / 'index.html'}")
    if failures:
        print("problems: " + "; ".join(failures))
        return 1
    return 0


def _write_index(path: Path, sections) -> None:
    parts = ["<!doctype html><meta charset='utf-8'><title>VisualMixer run</title>",
             "<h1>VisualMixer — main run</h1>"]
    for title, image, link, text in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if text:
            parts.append(f"<pre>{html.escape(text)}</pre>")
        if image and (path.parent / image).exists():
            parts.append(f"<img src='{html.escape(image)}' style='max-width:100%'>")
        if link:
            parts.append(f"<p><a href='{html.escape(link)}'>{html.escape(link)}</a></p>")
    path.write_text("\n".join(parts))
