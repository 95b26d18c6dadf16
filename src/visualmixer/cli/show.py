"""``visualmixer show IMAGE -o grid.png``: the original beside obfuscated versions."""

from __future__ import annotations

import argparse
import sys

from visualmixer.cli._common import REGION_RANGE, positive_int, region_side, unit_float

EXAMPLES = """\
examples:
  visualmixer show face.jpg -o grid.png
      the original and versions at target VFE 0.3, 0.5 and 0.8, side by side, each labelled with
      its achieved VFE
  visualmixer show face.jpg --target-vfe 0.4 0.6 0.9 --region 8 -o grid.png
  visualmixer show face.jpg --key secret/faces.key --id cats/face.jpg -o grid.png
      exactly the shuffle that `visualmixer obfuscate` gives that image (same key and id)
  visualmixer show scan.tif --max-pixels 200000000 -o grid.png
      a trusted image above the default decompression-bomb limit
  visualmixer show face.jpg -o grid.jpg
      the grid as JPEG (the suffix names the format: .png, .jpg/.jpeg, .bmp, .tif/.tiff, .webp)

  The grid contains the ORIGINAL image: treat it as private.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "show",
        help="write a picture of an image beside its obfuscated versions",
        description="Write a grid (PNG, or the format -o's suffix names): the original IMAGE beside "
        "obfuscated versions at each --target-vfe, labelled with the achieved VFE.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", metavar="IMAGE", help="an image file")
    p.add_argument("-o", "--output", required=True, metavar="GRID.png",
                   help="where to write the grid; its suffix names the format: .png (lossless), .jpg/.jpeg, "
                   ".bmp, .tif/.tiff or .webp (lossless); never IMAGE itself")
    p.add_argument("--target-vfe", type=unit_float, nargs="+", default=[0.3, 0.5, 0.8], metavar="TAU",
                   help="one or more targets in [0, 1] (default: 0.3 0.5 0.8)")
    p.add_argument("--region", type=region_side, default=None, metavar="N",
                   help=f"region side in pixels, {REGION_RANGE} (default: by image size)")
    p.add_argument("--key", metavar="KEYFILE", default=None,
                   help="use this key (default: fresh randomness, which is fine for a preview)")
    p.add_argument("--id", dest="image_id", default=None,
                   help="image id for the key (default: the file name); with --key and the path "
                   "relative to SRC, the grid shows exactly what `obfuscate` writes")
    p.add_argument("--max-pixels", type=positive_int, default=None, metavar="N",
                   help="refuse an IMAGE whose declared width x height exceeds N pixels (the "
                   "decompression-bomb guard; default: Pillow's, about 89.5 million); raise it "
                   "for a trusted large file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)
    return p


#: The grid's file formats by the suffix of -o (imageio.encode_image's names).
GRID_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp", ".tif": "tiff",
                ".tiff": "tiff", ".webp": "webp"}


def _grid_format(output: str, image: str) -> str:
    """The format of the grid file ``output``; refuses an unknown suffix and IMAGE itself."""
    import os
    from pathlib import Path

    fmt = GRID_FORMATS.get(Path(output).suffix.lower())
    if fmt is None:
        raise ValueError(f"-o/--output: cannot write a grid named {output} (suffix "
                         f"{Path(output).suffix or 'none'!r}); name it .png (lossless), .jpg, .bmp, .tif "
                         "or .webp")
    if os.path.exists(output) and os.path.exists(image) and os.path.samefile(output, image):
        raise ValueError(f"-o/--output: {output} is IMAGE itself; the grid would replace the image "
                         "(also with --overwrite): write the grid to another file")
    return fmt


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from visualmixer.cli._common import flags_for, load_key
    from visualmixer.core.mixer import obfuscate
    from visualmixer.tools import imageio as vio
    from visualmixer.tools.preview import side_by_side

    fmt = _grid_format(args.output, args.image)
    if Path(args.output).exists() and not args.overwrite:
        raise FileExistsError(f"-o/--output: {args.output} exists (pass --overwrite to replace it)")
    try:
        px = vio.read_image(args.image, max_pixels=args.max_pixels)
    except vio.ImageReadError as exc:
        raise ValueError(f"IMAGE {args.image}: {flags_for(str(exc), 'show')}") from None
    key = load_key(args.key) if args.key else None
    image_id = args.image_id or Path(args.image).name
    panels = [(px, "original")]
    for tau in args.target_vfe:
        res = obfuscate(px.unsqueeze(0), key=key, ids=[image_id] if key else None,
                           target_vfe=tau, region=args.region)
        panels.append((res.images[0], f"target {tau:.2f}: VFE {float(res.vfe[0]):.3f}"))
    picture = side_by_side([img for img, _ in panels], [text for _, text in panels])
    out = vio.write_bytes_atomic(args.output, vio.encode_image(picture, fmt), overwrite=args.overwrite)
    print(f"wrote {out} ({len(panels) - 1} obfuscated version(s) beside the original; it shows "
          "the original, keep it private)", file=sys.stderr)
    return 0
