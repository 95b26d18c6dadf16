"""Builders of good and bad image files for the io / CLI tests (no downloads, all made here)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SECRET_MAKE = b"SecretCam-7731"


def smooth_rgb(h: int, w: int, seed: int = 0, *, max_freq: float = 0.15, noise: float = 6.0) -> np.ndarray:
    """A smooth, photo-like uint8 (h, w, 3) image (so VFE targets are meaningful)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.02, max_freq), rng.uniform(0.02, max_freq), rng.uniform(0, 6.28)
        out[..., c] = 127 + 100 * np.sin(fx * xx + ph) * np.cos(fy * yy + c)
    out += rng.normal(0, noise, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header declares a huge size (decompression-bomb guard)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))


def exif_with_gps_and_thumbnail(thumbnail_jpeg: bytes, orientation: int = 1) -> bytes:
    """Raw EXIF (with the ``Exif\\0\\0`` prefix): Make, Orientation, a GPS IFD and an IFD1
    holding an embedded JPEG thumbnail."""
    le = "<"
    make = SECRET_MAKE + b"\x00"
    ifd0_off = 8
    ifd0_size = 2 + 3 * 12 + 4
    make_off = ifd0_off + ifd0_size
    gps_off = make_off + len(make)
    gps_size = 2 + 2 * 12 + 4
    lat_off = gps_off + gps_size
    ifd1_off = lat_off + 24
    ifd1_size = 2 + 2 * 12 + 4
    thumb_off = ifd1_off + ifd1_size
    out = b"II*\x00" + struct.pack(le + "I", ifd0_off)
    out += struct.pack(le + "H", 3)
    out += struct.pack(le + "HHII", 0x010F, 2, len(make), make_off)
    out += struct.pack(le + "HHIHH", 0x0112, 3, 1, orientation, 0)
    out += struct.pack(le + "HHII", 0x8825, 4, 1, gps_off)
    out += struct.pack(le + "I", ifd1_off)
    out += make
    out += struct.pack(le + "H", 2)
    out += struct.pack(le + "HHI", 1, 2, 2) + b"N\x00\x00\x00"
    out += struct.pack(le + "HHII", 2, 5, 3, lat_off)
    out += struct.pack(le + "I", 0)
    out += struct.pack(le + "IIIIII", 51, 1, 30, 1, 1234, 100)
    out += struct.pack(le + "H", 2)
    out += struct.pack(le + "HHII", 0x0201, 4, 1, thumb_off)
    out += struct.pack(le + "HHII", 0x0202, 4, 1, len(thumbnail_jpeg))
    out += struct.pack(le + "I", 0)
    assert len(out) == thumb_off
    return b"Exif\x00\x00" + out + thumbnail_jpeg


def png_chunk_types(data: bytes) -> list[bytes]:
    """The chunk types of a PNG file, in order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kinds.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return kinds


def jpeg_markers(data: bytes) -> list[int]:
    """The marker codes of a JPEG file's header segments (up to start of scan)."""
    assert data[:2] == b"\xff\xd8"
    pos, markers = 2, []
    while pos < len(data):
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:
            break
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        pos += 2 + length
    return markers


def good_and_bad_files() -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, expected status), covering every case of issue 3."""
    rgb = smooth_rgb(48, 64, 1)
    grey = rgb[..., 0]
    thumb = encode(Image.fromarray(smooth_rgb(16, 16, 9)), "JPEG", quality=80)
    exif_gps = exif_with_gps_and_thumbnail(thumb, orientation=6)
    rgba = np.dstack([rgb, np.full(grey.shape, 77, np.uint8)])
    la = np.dstack([grey, np.full(grey.shape, 9, np.uint8)])
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    pal.info["transparency"] = 3
    good_png = encode(Image.fromarray(rgb), "PNG")
    good_jpg = encode(Image.fromarray(smooth_rgb(48, 64, 2)), "JPEG", quality=92)
    files = {
        "good/a.png": (good_png, "done"),
        "good/b.jpg": (good_jpg, "done"),
        "good/grey.png": (encode(Image.fromarray(grey), "PNG"), "done"),
        "good/odd.png": (encode(Image.fromarray(smooth_rgb(37, 53, 4)), "PNG"), "done"),
        "modes/rgba.png": (encode(Image.fromarray(rgba), "PNG"), "done"),
        "modes/la.png": (encode(Image.fromarray(la), "PNG"), "done"),
        "modes/palette.png": (encode(pal, "PNG", transparency=3), "done"),
        "modes/cmyk.jpg": (encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=92), "done"),
        "modes/sixteen.png": (encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"), "done"),
        "modes/exif_gps_rot6.jpg": (encode(Image.fromarray(rgb), "JPEG", quality=92, exif=exif_gps),
                                    "done"),
        "modes/float.tif": (encode(Image.fromarray(grey.astype(np.float32)), "TIFF"), "failed"),
        "bad/empty.png": (b"", "failed"),
        "bad/text.jpg": (b"this is a text file, not a JPEG\n" * 4, "failed"),
        "bad/trunc.png": (good_png[: len(good_png) // 2], "failed"),
        "bad/trunc.jpg": (good_jpg[: len(good_jpg) // 2], "failed"),
        "bad/bomb.png": (bomb_png(), "skipped"),
    }
    return files


def write_tree(root: Path, files: dict[str, tuple[bytes, str]], extra_text: bool = True) -> None:
    for name, (data, _status) in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if extra_text:
        (root / "README.txt").write_text("labels: jane_doe\n")


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root (relative POSIX path -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def class_folders(root: Path, counts: dict[str, int], h: int = 12, w: int = 16) -> list[str]:
    """``root/<class>/<i>.png`` smooth RGB images, ``counts[class]`` per class; their ids."""
    ids = []
    for c, n in counts.items():
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(smooth_rgb(h, w, 100 * len(c) + i)).save(root / c / f"{i}.png")
            ids.append(f"{c}/{i}.png")
    return ids
