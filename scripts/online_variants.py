"""``visualmixer train`` with one thing of the online feed changed, to find where the online
overhead on the CPU goes (docs/performance.md, "Saliency weights made once"). For measuring only.

    OMP_NUM_THREADS=1 python scripts/online_variants.py --feed-only -- $A --mode online --prefetch 2 --out OUT
    OMP_NUM_THREADS=1 python scripts/online_variants.py --group 8 -- $A --mode online --prefetch 2 --out OUT
    OMP_NUM_THREADS=1 python scripts/online_variants.py --flush-denormal -- $A --mode offline --out OUT

``--feed-only`` replaces each batch's obfuscation (the test set's too) by a copy of the clean
images (the thread, queue and batch assembly stay), ``--group N`` obfuscates N batches per call,
``--flush-denormal`` sets ``torch.set_flush_denormal(True)`` for the whole run.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import types

import torch


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--feed-only", action="store_true", help="a copy instead of each batch's obfuscation")
    p.add_argument("--group", type=int, help="batches per obfuscate call in the in-process feed")
    p.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True)")
    a = p.parse_args(argv[:cut])
    if a.feed_only:
        from visualmixer.data import wrapper

        def copy(self, images, indices):
            return types.SimpleNamespace(images=images.clone(), vfe=torch.zeros(len(indices), dtype=torch.float64))

        wrapper.ObfuscatedDataset._obfuscate_images = copy
    if a.group:
        from visualmixer.train import feed

        feed.feed_group = lambda batch_size, dev: a.group
    if a.flush_denormal and not torch.set_flush_denormal(True):
        raise SystemExit("--flush-denormal: this CPU has no flush-to-zero mode")
    sys.argv = ["visualmixer", "train", *argv[cut + 1:]]
    runpy.run_module("visualmixer", run_name="__main__")


if __name__ == "__main__":
    main()
