"""Install metadata and optional dependencies: the core needs torch, numpy and Pillow only."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
from packaging.requirements import Requirement  # noqa: E402
from packaging.version import Version  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _reqs(strings):
    return [Requirement(s) for s in strings]


def test_core_dependencies_are_torch_numpy_pillow():
    assert sorted(r.name.lower() for r in _reqs(PROJECT["dependencies"])) == ["numpy", "pillow", "torch"]


def test_ranges_not_pins_so_a_users_torch_is_kept():
    """pip keeps an installed torch when the range admits it: every release from 2.2 on is admitted."""
    for group in [PROJECT["dependencies"], *PROJECT["optional-dependencies"].values()]:
        for req in _reqs(group):
            assert "==" not in str(req.specifier), f"{req} pins an exact version: exact pins go in constraints.txt"
    torch = next(r for r in _reqs(PROJECT["dependencies"]) if r.name == "torch")
    for v in ("2.2.0", "2.9.1", "2.13.0", "2.14.1"):
        assert torch.specifier.contains(Version(v)), v
    assert not any(r.name == "torchmetrics" for r in _reqs(PROJECT["dependencies"]))


def test_every_extra_named_in_the_code_exists():
    extras = set(PROJECT["optional-dependencies"])
    named = set()
    for path in (ROOT / "src" / "visualmixer").rglob("*.py"):
        named |= set(re.findall(r'extra="([a-z]+)"', path.read_text()))
    assert named, "no require(..., extra=...) call found"
    assert named <= extras, f"extras named in the code but not in pyproject.toml: {sorted(named - extras)}"


def test_constraints_pin_what_make_installs():
    pins = {line.split("==")[0].lower() for line in (ROOT / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    assert {"torch", "torchvision", "numpy", "pillow", "import-linter"} <= pins


BLOCKER = textwrap.dedent('''
    import importlib.abc, sys
    BLOCKED = {"torchvision", "matplotlib", "skimage", "scipy", "sklearn", "tqdm", "cv2", "dask",
               "datasets", "flwr", "opacus", "facenet_pytorch"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Block())
''')


def test_core_works_without_any_extra():
    """With every optional package hidden, the core obfuscates and restores, and the transform
    says which extra to install."""
    code = BLOCKER + textwrap.dedent('''
        import torch, visualmixer as vm
        from visualmixer.core.optional import MissingExtraError
        x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
        key = vm.Key.from_seed(1)
        res = vm.obfuscate(x, key=key, ids=[0, 1], target_vfe=0.5)
        assert torch.equal(vm.restore(res.images, res.plans, key=key, ids=[0, 1]), x)
        vm.vfe(x)
        try:
            vm.VisualMixer
        except MissingExtraError as exc:
            print("MSG", exc)
        bad = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        assert not bad, bad
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "MSG " in out.stdout and "VisualMixer" in out.stdout and "needs torchvision" in out.stdout
    assert "pip install 'visualmixer[data]'" in out.stdout


def _venv_with_stubs(tmp_path, torch_version):
    """A fresh venv whose 'installed' torch, numpy and Pillow are metadata-only stubs."""
    venv = tmp_path / f"venv-{torch_version}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    for name, version in (("torch", torch_version), ("numpy", "1.26.4"), ("pillow", "10.3.0")):
        d = Path(site) / f"{name}-{version}.dist-info"
        d.mkdir()
        (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (d / "INSTALLER").write_text("pip\n")
        (d / "RECORD").write_text("")
    # the build backend comes from this environment (setuptools), not from the network
    backend = tmp_path / "backend"
    backend.mkdir(exist_ok=True)
    import setuptools

    for mod in ("setuptools", "pkg_resources", "_distutils_hack"):
        src = Path(setuptools.__file__).parents[1] / mod
        if src.exists() and not (backend / mod).exists():
            (backend / mod).symlink_to(src)
    return py, backend


def _dry_run(py, backend, tmp_path):
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(backend)}
    out = subprocess.run([str(py), "-m", "pip", "install", "--dry-run", "--quiet", "--no-index",
                          "--no-build-isolation", "--report", str(report), str(ROOT)],
                         capture_output=True, text=True, env=env, timeout=300)
    return out, report


def test_pip_install_keeps_a_users_older_torch(tmp_path):
    """pip's own resolver, offline, in a venv that already has torch 2.3: only visualmixer is
    installed. (With an exact pin in pyproject.toml this resolution fails.)"""
    import json

    py, backend = _venv_with_stubs(tmp_path, "2.3.0")
    out, report = _dry_run(py, backend, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    installed = [(i["metadata"]["name"], i["metadata"]["version"]) for i in json.loads(report.read_text())["install"]]
    assert [n for n, _ in installed] == ["visualmixer"], installed
    # and the check can fail: a torch below the supported range is not accepted
    py_old, _ = _venv_with_stubs(tmp_path, "2.0.1")
    out, _ = _dry_run(py_old, backend, tmp_path)
    assert out.returncode != 0 and "torch" in (out.stderr + out.stdout)
