"""``visualmixer obfuscate SRC DST --key KEYFILE``: an unrecognisable, restorable copy of a folder."""

from __future__ import annotations

import argparse

from visualmixer.cli._common import REGION_RANGE, add_mix_shape_options, positive_int, region_side, unit_float

EXAMPLES = """\
examples:
  visualmixer keygen secret/faces.key
  visualmixer obfuscate photos/ shared/photos-vm --key secret/faces.key
      mirror photos/ (ImageFolder layout or flat) into shared/photos-vm as metadata-free PNGs;
      the private manifest (plans, VFE, status) goes to secret/faces.key.photos-vm-<hash>.manifest.jsonl
  visualmixer obfuscate photos/ shared/photos-vm --key secret/faces.key --target-vfe 0.7 --rename
      stronger shuffling; file names replaced by opaque keyed ids (kept in the manifest)
  visualmixer obfuscate photos/ shared/photos-vm --key secret/faces.key --workers 4
  visualmixer obfuscate train/ shared/train-vm --key secret/faces.key --target-vfe 1.0 --mix 64 --mix-balanced
      labelled set (train/<class>/<image>): regions exchanged within balanced groups of 64
      same-class images, then shuffled inside; restore gives every image back exactly. The
      setting we recommend; train on it with the owner's soft labels (visualmixer soft-labels)
  visualmixer obfuscate train/ shared/train-vm --key secret/faces.key --mix 4 --groups similar
      groups of 4 look-alike images: cheaper in accuracy, far less private (docs/privacy.md)
  visualmixer obfuscate train/ shared/train-vm --key secret/faces.key --mix 4 --mix-share 0.5
      exchange regions at a keyed half of the region positions only (the others keep each
      image's own region): less accuracy lost, more left of each image
  visualmixer obfuscate photos/ shared/photos-vm --key secret/faces.key --dask local
  visualmixer obfuscate photos/ shared/photos-vm --key secret/faces.key --dask tcp://10.0.0.5:8786

  Interrupted? Run the same command again: finished images are skipped, the rest is done, and the
  result is byte-identical to an uninterrupted run. A finished output whose size, modification time
  and inode are as recorded is not read again; --verify-outputs hashes every one. One run per
  destination at a time (a lock beside the manifest); a second run is refused at once, naming the
  first's PID and start time.

exit status:
  0    no image failed (images over --max-pixels are skipped, listed)
  1    some files failed (each listed with its reason)
  2    usage error (also: DST holds images this run's manifest does not record, e.g. another key's)
  3    stopped: disk full, permission denied, read-only or I/O error
  4    another run holds DST     130  interrupted (Ctrl-C)     143  terminated (SIGTERM)
  On 3, 130 and 143 nothing is lost: fix the cause and rerun the same command (printed) to resume.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "obfuscate",
        help="obfuscate a folder of images into a mirrored folder",
        description="Obfuscate every image under SRC into a mirrored tree under DST (PNG, no "
        "metadata). Image ids are the paths relative to SRC. Nothing is written inside SRC; DST "
        "must be outside SRC. A private manifest (per-image plans, achieved VFE, status, rename "
        "mapping) is written next to the key or at --manifest, never inside DST.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="folder of images (read only)")
    p.add_argument("dst", metavar="DST", help="output folder (created; must not be inside SRC)")
    p.add_argument("--key", required=True, metavar="KEYFILE",
                   help="master key file from `visualmixer keygen` (e.g. --key secret/faces.key)")
    p.add_argument("--target-vfe", type=unit_float, default=0.5, metavar="TAU",
                   help="requested visual feature entropy in [0, 1]; higher hides more "
                   "(default 0.5; e.g. --target-vfe 0.7)")
    p.add_argument("--region", type=region_side, default=None, metavar="N",
                   help=f"region side in pixels, {REGION_RANGE} (default: 16 if the shorter side >= 128, "
                   "8 if >= 48, else 4; e.g. --region 16)")
    p.add_argument("--no-channel-order", dest="channel_order", action="store_false",
                   help="do not permute the channel order per region (on by default)")
    p.add_argument("--format", choices=("png", "same"), default="png",
                   help="png (default): lossless, exact restore. same: keep the input format "
                   "(JPEG is re-encoded lossy, so restore is no longer exact; a warning is printed)")
    p.add_argument("--rename", action="store_true",
                   help="replace file names by opaque keyed ids (names like jane_doe.jpg leak); "
                   "the mapping is kept in the private manifest")
    p.add_argument("--manifest", metavar="PATH", default=None,
                   help="where to write the private manifest (default: next to the key; never "
                   "inside SRC or DST; e.g. --manifest secret/photos.manifest.jsonl)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over: replace existing outputs and the manifest (default: resume, "
                   "never overwrite)")
    p.add_argument("--verify-outputs", action="store_true",
                   help="on a resume, hash every finished output and do again those that differ "
                   "from the manifest's SHA-256 (default: an output whose size, modification time "
                   "and inode are as recorded is taken as intact without reading it; others are "
                   "hashed)")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="worker processes (default 1; e.g. --workers 4); with --dask local, the "
                   "number of local Dask workers (at least 2)")
    p.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="run on Dask: 'local' (a LocalCluster on 127.0.0.1) or tcp://HOST:PORT of "
                   "a running scheduler (needs `pip install 'visualmixer[dask]'`; the key is sent "
                   "to the workers: use trusted machines)")
    p.add_argument("--batch-size", type=positive_int, default=16, metavar="N",
                   help="images per job (default 16); keep it the same when resuming")
    p.add_argument("--max-pixels", type=positive_int, default=None, metavar="N",
                   help="skip images whose declared width*height exceeds N (decompression-bomb "
                   "guard; default Pillow's limit, about 89 million)")
    p.add_argument("--mix", type=positive_int, default=None, metavar="K",
                   help="mix regions across groups of K images of one class (K >= 2); the classes "
                   "are SRC's sub-folders (SRC/<class>/<image>); every image of a class must have "
                   "one size; PNG only (e.g. --mix 64 --mix-balanced, the setting we recommend)")
    p.add_argument("--groups", dest="grouping", choices=("random", "similar"), default=None,
                   help="with --mix: random (keyed, default) or similar (look-alike images of a "
                   "class together)")
    add_mix_shape_options(p, share_default=None)
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar; print only failures")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from visualmixer.cli._common import folder_run_options, load_key, print_summary
    from visualmixer.tools.folders import FolderOptions, obfuscate_folder

    key = load_key(args.key)
    options = FolderOptions(
        target_vfe=args.target_vfe,
        region=args.region,
        channel_order=args.channel_order,
        format=args.format,
        rename=args.rename,
        max_pixels=args.max_pixels,
        mix=args.mix,
        grouping=args.grouping or "random",
        mix_share=1.0 if args.mix_share is None else args.mix_share,
        mix_balanced=args.mix_balanced,
    )
    if args.grouping is not None and args.mix is None:
        raise ValueError("--groups needs --mix K (images per mixing group)")
    if args.mix_share is not None and args.mix is None:
        raise ValueError("--mix-share needs --mix K (images per mixing group)")
    if args.mix_balanced and args.mix is None:
        raise ValueError("--mix-balanced needs --mix K (images per mixing group)")
    summary = obfuscate_folder(args.src, args.dst, key, options=options, batch_size=args.batch_size,
                               verify_outputs=args.verify_outputs, **folder_run_options(args))
    print_summary("obfuscated", summary, quiet=args.quiet)
    return summary.exit_code
