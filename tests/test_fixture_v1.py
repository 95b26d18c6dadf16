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


def _cut_run(fixture_copy, keep: set[str], generator_in_header) -> Path:
    """The v1 run ``obf`` as if killed after the images ``keep``: a manifest holding their records
    only (the header's ``generator`` set to ``generator_in_header``, or absent), the others' outputs gone."""
    lines = (fixture_copy / "obf.manifest.jsonl").read_text().splitlines()
    header = {**json.loads(lines[0]), "src": str(fixture_copy / "src"), "dst": str(fixture_copy / "obf")}
    header.pop("generator", None)
    if generator_in_header is not None:
        header["generator"] = generator_in_header
    kept = [json.loads(line) for line in lines[1:] if json.loads(line).get("id") in keep]
    man = fixture_copy / "cut.manifest.jsonl"
    man.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in [header, *kept]))
    man.chmod(0o600)
    for rec in (json.loads(line) for line in lines[1:]):
        if rec.get("t") == "done" and rec["id"] not in keep:
            (fixture_copy / "obf" / rec["out"]).unlink(missing_ok=True)
    return man


@pytest.mark.parametrize("generator_in_header", [None, 1])
def test_a_run_of_the_first_generator_is_not_resumed_by_this_release(fixture_copy, capsys, generator_in_header):
    """Its outputs' plans say generator 1, whatever its header says (headers once said 1 for every
    run): finishing it with generator 2 would mix the two in one folder."""
    man = _cut_run(fixture_copy, {"a.png", "grey.png"}, generator_in_header)
    rc = main(["obfuscate", str(fixture_copy / "src"), str(fixture_copy / "obf"), "--key",
               str(fixture_copy / "test.key"), "--manifest", str(man), "--quiet"])
    assert rc == 2
    assert "permutation generator version 1 (this visualmixer uses 2; outputs would mix)" in capsys.readouterr().err
    assert len(Manifest.read(man).done()) == 2  # nothing was added


def test_a_run_of_this_release_whose_header_says_generator_1_resumes(fixture_copy, tmp_path):
    """Headers written before the check worked said 1 for runs whose plans are generator 2."""
    src, key = fixture_copy / "src", str(fixture_copy / "test.key")
    dst, man = tmp_path / "obf2", tmp_path / "obf2.manifest.jsonl"
    assert main(["obfuscate", str(src), str(dst), "--key", key, "--manifest", str(man), "--quiet"]) == 0
    lines = man.read_text().splitlines()
    header = {**json.loads(lines[0]), "generator": 1}
    done = [json.loads(line) for line in lines[1:] if json.loads(line).get("t") == "done"]
    assert header and {r["plan"]["generator"] for r in done} == {2}
    man.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in [header, *done[:2]]))
    for rec in done[2:]:
        (dst / rec["out"]).unlink()
    assert main(["obfuscate", str(src), str(dst), "--key", key, "--manifest", str(man), "--quiet"]) == 0
    assert len(Manifest.read(man).done()) == 5
