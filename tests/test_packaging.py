"""Install metadata and optional dependencies: the core needs torch, numpy and Pillow only."""

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
