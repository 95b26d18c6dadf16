"""``visualmixer run``: the main job on the built-in data (the target of ``make run``); parsing and
printing only, the work is in :mod:`visualmixer.eval.report.runpage`, :mod:`visualmixer.train` and
:mod:`visualmixer.eval.report`. What it does: ``DESCRIPTION`` (its ``--help``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visualmixer.cli._common import positive_int

DEFAULT_TARGETS = (0.3, 0.5, 0.7)

DESCRIPTION = """\
The main job on the built-in data (what `make run` runs):

  1. obfuscates the built-in photos at a few VFE targets with a fresh key, checks that restore
     is exact, prints the achieved VFE per image and target, writes a picture grid and a JSON;
  2. trains the small CNN clean and obfuscated on Fashion-MNIST (a few epochs on a subset);
  3. audits VisualMixer against the noise, blur, pixelation and block-scrambling baselines.

Everything lands in --out (default out/run): one page, index.html, shows it all, with the
privacy verdict in one sentence at the top (also the last line printed).
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: obfuscate built-in photos, train clean vs obfuscated, quick privacy audit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: visualmixer run --out out/run --targets 0.3 0.5 0.7",
    )
    p.add_argument("--out", default="out/run", help="output folder (default: out/run)")
    p.add_argument("--targets", type=float, nargs="+", default=list(DEFAULT_TARGETS),
                   help="VFE targets for the photo grid (default: 0.3 0.5 0.7)")
    p.add_argument("--size", type=positive_int, default=224, help="side of the square photo crops (default: 224)")
    p.add_argument("--skip-train", action="store_true", help="skip the clean-vs-obfuscated training")
    p.add_argument("--skip-audit", action="store_true", help="skip the quick privacy audit")
    p.add_argument("--epochs", type=positive_int, default=2, help="training epochs (default: 2)")
    p.add_argument("--quiet", action="store_true", help="print only the summary tables")
    p.set_defaults(func=run)


def run(args) -> int:
    from visualmixer.eval.report.runpage import photo_demo, photo_section, photo_table, write_run_page
    from visualmixer.eval.report.runsections import audit_section, training_section

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda s: None) if args.quiet else print
    for t in args.targets:
        if not 0 <= t <= 1:
            raise ValueError(f"--targets must be in [0, 1], got {t}")
    failures = []

    log("[1/3] obfuscating the built-in photos ...")
    photos = photo_demo(out, args.targets, size=args.size)
    print("Achieved VFE per image and target (higher = less recognisable):")
    print(photo_table(photos["images"], args.targets))
    print(f"restore bit-exact: {photos['restore_bit_exact']}")
    if not photos["restore_bit_exact"]:
        failures.append("restore was not bit-exact")
    sections = [photo_section(out, photos)]

    if not args.skip_train:
        log("[2/3] training the small CNN clean and obfuscated on Fashion-MNIST ...")
        try:
            from visualmixer.train import quick_compare

            summary = quick_compare(out / "train", targets=(None, 0.5), epochs=args.epochs,
                                    progress=not args.quiet)
            print(summary["table"].rstrip())
            sections.append(training_section(out, summary))
        except (ImportError, FileNotFoundError) as exc:
            failures.append(f"training skipped: {exc}")
            print(f"training skipped: {exc}")

    verdict, notes = "No privacy verdict: the quick audit was skipped (--skip-audit).", []
    if not args.skip_audit:
        log("[3/3] quick privacy audit against baselines ...")
        try:
            from visualmixer.eval.report import quick_audit

            quick_audit(out / "audit", target_vfe=0.5, progress=not args.quiet, log=log)
            section, verdict, note = audit_section(out, out / "audit")
            sections.append(section)
            notes = [note] if note else []
        except (ImportError, FileNotFoundError) as exc:
            failures.append(f"audit skipped: {exc}")
            print(f"audit skipped: {exc}")
            verdict = f"No privacy verdict: the quick audit could not run ({exc})."

    write_run_page(out / "index.html", sections, verdict=verdict, notes=notes)
    print(f"wrote {out / 'index.html'}")
    if failures:
        print("problems: " + "; ".join(failures))
    print(verdict)  # the last line: the same sentence as at the top of the page
    return 1 if failures else 0
