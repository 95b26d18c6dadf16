"""Write a built-in data set as a class folder of PNGs (``OUT/<class>/<index>.png``), the input of the tools.

For measuring the tools' path end to end on a known set (docs/privacy.md §4c, "Soft labels as a
file"): ``visualmixer obfuscate`` / ``soft-labels`` read class folders. A ``/`` in a class name
(Fashion-MNIST's ``T-shirt/top``) becomes ``-``. Existing files are refused.

    python scripts/export_image_folder.py fashion-mnist train out/release/src-train
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from visualmixer.data.datasets import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="a visualmixer train --data name (fashion-mnist, photos, tinted-fm, ...)")
    ap.add_argument("split", choices=("train", "test"))
    ap.add_argument("out", type=Path)
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()
    ds = load_dataset(args.data, args.split, root=args.data_root)
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty")
    names = [c.replace("/", "-") for c in ds.classes]
    for name in names:
        (args.out / name).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(ds.images, ds.labels.tolist(), strict=True)):
        pixels = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(args.out / names[label] / f"{i:05d}.png")
    print(f"{len(ds)} images of {len(names)} classes in {args.out}")


if __name__ == "__main__":
    main()
