"""Old data keeps restoring: tests/fixtures/v1/ was made by the code of 2026-11-27 (manifest format
version 1, the first permutation generator; see tests/fixtures/v1/make_fixture.py). Whatever the
core does to its generator later, these outputs must restore bit-exactly (issue 12 item 5, issue 15).

``tests/fixtures/v1/test.key`` is a committed TEST key; it protects nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from visualmixer.cli import main
from visualmixer.tools.imageio import load_image
from visualmixer.tools.manifest import Manifest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v1"
RUNS = ["obf", "obf_rename"]


def _pixels_sha(path: Path) -> tuple[list[int], str]:
    px = load_image(path).pixels
    return list(px.shape), hashlib.sha256(px.contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture
def fixture_copy(tmp_path):
    """A writable copy (restore writes nothing into the fixture, but be safe)."""
    out = tmp_path / "v1"
    shutil.copytree(FIXTURE, out)
    (out / "test.key").chmod(0o600)
    return out


def test_fixture_is_intact():
    """The committed outputs are those the manifests describe (nobody regenerated them)."""
    for run in RUNS:
        man = Manifest.read(FIXTURE / f"{run}.manifest.jsonl")
        assert man.header["version"] == 1
        done = man.done()
        assert len(done) == 5
        for rec in done:
            data = (FIXTURE / run / rec["out"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == rec["sha256"], rec["id"]


@pytest.mark.parametrize("run", RUNS)
def test_v1_fixture_restores_bit_exactly(fixture_copy, tmp_path, run):
    expected = json.loads((fixture_copy / "expected.json").read_text())
    restored = tmp_path / f"restored-{run}"
    rc = main(["restore", str(fixture_copy / run), str(restored), "--key",
               str(fixture_copy / "test.key"), "--manifest",
               str(fixture_copy / f"{run}.manifest.jsonl"), "--quiet"])
    assert rc == 0
    got = {p.relative_to(restored).as_posix(): p for p in sorted(restored.rglob("*.png"))}
    assert sorted(got) == sorted(expected)
    for image_id, want in expected.items():
        shape, sha = _pixels_sha(got[image_id])
        assert shape == want["shape"], image_id
        assert sha == want["pixels_sha256"], f"{run}/{image_id} restored pixels differ"
    # and they are the pixels of the committed sources
    for image_id in expected:
        assert _pixels_sha(fixture_copy / "src" / image_id) == _pixels_sha(got[image_id])


def test_v1_plans_restore_through_the_api(fixture_copy):
    """The same through ``vm.restore`` with a plan read from the v1 manifest."""
    import torch

    import visualmixer as vm

    key = vm.Key.load(fixture_copy / "test.key")
    man = Manifest.read(fixture_copy / "obf_rename.manifest.jsonl")
    rec = man.records["sub/b.png"]
    obf = load_image(fixture_copy / "obf_rename" / rec["out"]).pixels
    plans = vm.Plans.from_dict(rec["plan"])
    back = vm.restore(obf.unsqueeze(0), plans, key=key, ids=[rec["id"]])[0]
    assert torch.equal(back, load_image(fixture_copy / "src" / "sub" / "b.png").pixels)
