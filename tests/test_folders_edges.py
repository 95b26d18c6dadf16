"""Folder runs at their edges: colliding output names, another key's outputs in DST, links from
DST into SRC, files that are not regular files, damaged outputs on resume, SIGTERM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visualmixer.cli import main
from visualmixer.tools import imageio as vio
from visualmixer.tools.manifest import Manifest

try:
    from _vm_files import smooth_rgb
except ImportError:  # tests/ as a package
    from ._vm_files import smooth_rgb


def _save(path: Path, seed: int, fmt: str = "PNG", size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_rgb(size, size, seed)).save(path, format=fmt)


@pytest.fixture()
def keys(tmp_path):
    paths = []
    for name in ("a.key", "b.key"):
        path = tmp_path / "secret" / name
        path.parent.mkdir(exist_ok=True)
        assert main(["keygen", str(path), "-q"]) == 0
        paths.append(path)
    return paths


def _pixels(path: Path) -> np.ndarray:
    return vio.read_image(path).numpy()


@pytest.mark.parametrize("rename", [False, True])
def test_colliding_output_names_keep_every_image(tmp_path, keys, capsys, rename):
    src, dst, back = tmp_path / "src", tmp_path / "dst", tmp_path / "back"
    for seed, name in enumerate(["a.jpg", "a.png", "a.jpg.png"]):
        _save(src / name, seed, "JPEG" if name.endswith(".jpg") else "PNG")
    extra = ["--rename"] if rename else []
    assert main(["obfuscate", str(src), str(dst), "--key", str(keys[0]), "-q", *extra]) == 0
    man = Manifest.read(next(keys[0].parent.glob("a.key.dst-*.manifest.jsonl")))
    outs = sorted(r["out"] for r in man.done())
    assert len(set(outs)) == 3 and sorted(p.name for p in dst.iterdir()) == outs
    if not rename:
        assert outs == ["a.jpg-2.png", "a.jpg.png", "a.png"]
    # a rerun finds all three done (the names are decided again the same way)
    assert main(["obfuscate", str(src), str(dst), "--key", str(keys[0]), *extra]) == 0
    assert "already done 3" in capsys.readouterr().out
    assert main(["restore", str(dst), str(back), "--key", str(keys[0]), "-q"]) == 0
    restored = sorted(back.iterdir())
    assert len(restored) == 3
    wanted = {name: _pixels(src / name) for name in ["a.jpg", "a.png", "a.jpg.png"]}
    got = {p.name: _pixels(p) for p in restored}
    assert np.array_equal(got["a.png"], wanted["a.png"])
    assert np.array_equal(got["a.jpg.png"], wanted["a.jpg.png"])
    assert np.array_equal(got["a.jpg-2.png"], wanted["a.jpg"])
