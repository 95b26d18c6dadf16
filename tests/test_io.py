"""visualmixer.tools.imageio: documented conversions, one-line reasons for bad files, metadata-free atomic
writes; visualmixer.tools.manifest: append-only, crash-tolerant."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from visualmixer.tools import imageio as vio
from visualmixer.tools.manifest import Manifest

try:
    from _vm_files import (
        SECRET_MAKE,
        bomb_png,
        encode,
        exif_with_gps_and_thumbnail,
        good_and_bad_files,
        jpeg_markers,
        png_chunk_types,
        smooth_rgb,
    )
except ImportError:  # tests/ as a package
    from ._vm_files import (
        SECRET_MAKE,
        bomb_png,
        encode,
        exif_with_gps_and_thumbnail,
        good_and_bad_files,
        jpeg_markers,
        png_chunk_types,
        smooth_rgb,
    )

RGB = smooth_rgb(20, 30, 0)


def _px(data: bytes) -> np.ndarray:
    t = vio.decode_image(data).pixels
    assert t.dtype == torch.uint8 and t.is_contiguous()
    return t.numpy()


def test_rgb_and_grey_exact():
    assert np.array_equal(_px(encode(Image.fromarray(RGB), "PNG")), RGB.transpose(2, 0, 1))
    grey = RGB[..., 1]
    assert np.array_equal(_px(encode(Image.fromarray(grey), "PNG")), grey[None])


def test_alpha_is_dropped_not_composited():
    rgba = np.dstack([RGB, np.arange(600, dtype=np.uint8).reshape(20, 30)])
    loaded = vio.decode_image(encode(Image.fromarray(rgba), "PNG"))
    assert np.array_equal(loaded.pixels.numpy(), RGB.transpose(2, 0, 1))
    assert loaded.mode == "RGBA" and "alpha dropped" in loaded.conversions
    la = np.dstack([RGB[..., 0], np.full((20, 30), 3, np.uint8)])
    assert np.array_equal(_px(encode(Image.fromarray(la), "PNG")), RGB[None, ..., 0])


def test_palette_cmyk_16bit_bilevel():
    pal = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    expected = np.asarray(pal.convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(_px(encode(pal, "PNG")), expected)

    cmyk = Image.fromarray(RGB).convert("CMYK")
    tiff = encode(cmyk, "TIFF")  # lossless CMYK container
    assert np.array_equal(_px(tiff), np.asarray(cmyk.convert("RGB")).transpose(2, 0, 1))

    wide = (np.arange(600, dtype=np.uint16).reshape(20, 30) * 109).astype(np.uint16)
    got = _px(encode(Image.fromarray(wide), "PNG"))
    assert got.shape == (1, 20, 30)
    assert np.array_equal(got[0], np.round(wide / 257.0).astype(np.uint8))

    bits = RGB[..., 0] > 128
    got = _px(encode(Image.fromarray(bits), "PNG"))
    assert set(np.unique(got)) <= {0, 255} and np.array_equal(got[0] == 255, bits)


@pytest.mark.parametrize("orientation,fn", [
    (3, lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, -1)),
    (8, lambda a: np.rot90(a, 1)),
    (2, lambda a: a[:, ::-1]),
])
def test_exif_orientation_applied(orientation, fn):
    ex = Image.Exif()
    ex[0x0112] = orientation
    data = encode(Image.fromarray(RGB), "PNG", exif=ex.tobytes())
    loaded = vio.decode_image(data)
    assert np.array_equal(loaded.pixels.numpy(), np.ascontiguousarray(fn(RGB)).transpose(2, 0, 1))
    assert any("orientation" in c for c in loaded.conversions)


@pytest.mark.parametrize("name", [n for n, (_d, s) in good_and_bad_files().items() if s != "done"])
def test_bad_files_give_one_line_reasons(name):
    data, _status = good_and_bad_files()[name]
    with pytest.raises(vio.ImageReadError) as err:
        vio.decode_image(data)
    msg = str(err.value)
    assert msg and "\n" not in msg and len(msg) < 300
    expected = {"empty": "empty file", "text": "not a recognised image", "trunc": "truncated",
                "bomb": "decompression-bomb", "float": "unsupported mode"}
    assert any(word in name and text in msg for word, text in expected.items()), msg


def test_max_pixels_limit_both_ways(tmp_path):
    data = encode(Image.fromarray(RGB), "PNG")
    with pytest.raises(vio.ImageReadError, match="30x20 = 600 pixels exceed"):
        vio.decode_image(data, max_pixels=599)
    assert vio.decode_image(data, max_pixels=600).pixels.shape == (3, 20, 30)
    # a limit above Pillow's own is honoured (and Pillow's global is restored afterwards)
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(vio.ImageReadError, match="truncated or corrupt"):
        vio.decode_image(bomb_png(20000, 20000), max_pixels=10**9)
    assert Image.MAX_IMAGE_PIXELS == before
    path = tmp_path / "missing.png"
    with pytest.raises(vio.ImageReadError, match="cannot read file"):
        vio.load_image(path)


def test_png_written_without_any_metadata_and_atomically(tmp_path):
    thumb = encode(Image.fromarray(smooth_rgb(8, 8, 3)), "JPEG")
    src = encode(Image.fromarray(RGB), "JPEG", exif=exif_with_gps_and_thumbnail(thumb),
                 icc_profile=b"\0" * 128)
    assert SECRET_MAKE in src and thumb in src
    px = vio.decode_image(src).pixels
    out = tmp_path / "sub" / "x.png"
    vio.write_png(out, px)
    data = out.read_bytes()
    assert png_chunk_types(data) == [b"IHDR", b"IDAT", b"IEND"]
    assert SECRET_MAKE not in data and b"Exif" not in data and thumb[:64] not in data
    assert np.array_equal(vio.read_image(out).numpy(), px.numpy())
    assert os.listdir(out.parent) == ["x.png"]  # no temporary left behind
    with pytest.raises(FileExistsError, match="overwrite"):
        vio.write_png(out, px)
    vio.write_png(out, px, overwrite=True)
    assert out.read_bytes() == data  # deterministic bytes
    jpeg = vio.encode_image(px, "jpeg")
    assert 0xE1 not in jpeg_markers(jpeg) and 0xE2 not in jpeg_markers(jpeg)  # no EXIF/XMP, no ICC
    assert Image.open(io.BytesIO(jpeg)).getexif() == {}


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(vio.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        vio.write_png(tmp_path / "y.png", torch.zeros(1, 4, 4, dtype=torch.uint8))
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_temps_and_extensions(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".x.png.1234abcd.vmtmp").write_bytes(b"half")
    (tmp_path / "a" / "keep.png").write_bytes(b"x")
    assert vio.remove_stale_temps(tmp_path) == 1
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["keep.png"]
    assert vio.is_image_path("A.JPG") and not vio.is_image_path("notes.txt")


def test_encode_rejects_bad_input():
    with pytest.raises(ValueError, match="format"):
        vio.encode_image(torch.zeros(3, 2, 2, dtype=torch.uint8), "gif")
    with pytest.raises(TypeError, match="uint8"):
        vio.encode_image(torch.zeros(3, 2, 2), "png")
    with pytest.raises(ValueError, match="C in"):
        vio.encode_image(torch.zeros(2, 2, 2, dtype=torch.uint8), "png")


def test_manifest_create_never_writes_through_a_file_or_link_already_there(tmp_path):
    """The manifest's temporary is a new file of its own, mode 0600 from the start: not a
    ``.NAME.new`` left there, which could be a link (its target would be truncated and written,
    and the manifest become that link) or a file others can read (and hold open)."""
    path = tmp_path / "m.jsonl"
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours to truncate")
    (tmp_path / ".m.jsonl.new").symlink_to(victim)
    old = os.umask(0)
    try:
        Manifest.create(path, {"dst": "x"}).close()
    finally:
        os.umask(old)
    assert victim.read_text() == "not yours to truncate"
    assert not path.is_symlink() and oct(path.stat().st_mode & 0o777) == "0o600"
    assert Manifest.read(path).header["dst"] == "x"
    readable = tmp_path / ".n.jsonl.new"
    readable.write_text("")
    os.chmod(readable, 0o644)
    with open(readable) as held:  # someone holding it open would read the private records
        Manifest.create(tmp_path / "n.jsonl", {"dst": "y"}).close()
        assert held.read() == ""
    assert oct((tmp_path / "n.jsonl").stat().st_mode & 0o777) == "0o600"


def test_manifest_survives_a_cut_line(tmp_path):
    path = tmp_path / "m.jsonl"
    man = Manifest.create(path, {"dst": "x"})
    man.append([{"t": "done", "id": "a", "out": "a.png"}, {"t": "pending", "id": "b"}])
    man.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with open(path, "ab") as fh:
        fh.write(b'{"t": "done", "id": "b", "ou')  # killed mid-write
    man = Manifest.open(path)
    assert man.records["b"]["t"] == "pending" and man.records["a"]["t"] == "done"
    man.append([{"t": "done", "id": "b", "out": "b.png"}])
    man.close()
    again = Manifest.read(path)
    assert again.records["b"]["t"] == "done" and [r["id"] for r in again.done()] == ["a", "b"]
    with pytest.raises(FileExistsError):
        Manifest.create(path, {})
