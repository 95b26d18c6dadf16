"""The house in layers: checks that keep the package's structure what docs/architecture.md says.

The layers contract itself (apps -> eval -> train -> data -> tools -> core) is import-linter's,
run by `make test` (`lint-imports`, configured in pyproject.toml); these are the rules it does
not cover.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "visualmixer"
LAYERS = ("core", "tools", "data", "train", "eval", "fl", "cli")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules():
    return sorted(p for p in PKG.rglob("*.py"))


def test_every_module_lives_in_a_layer():
    top = {p.relative_to(PKG).parts[0] for p in _modules()}
    assert top <= set(LAYERS) | {"__init__.py", "__main__.py"}, sorted(top - set(LAYERS))


def test_library_modules_do_not_import_the_package_front():
    """`import visualmixer as vm` inside the library hides which layer a name comes from."""
    bad = []
    for p in _modules():
        if p.parent == PKG:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import) and any(a.name == "visualmixer" for a in node.names):
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.module == "visualmixer" and node.level == 0:
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad


def test_library_never_seeds_the_global_generator():
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in _modules()
           for i, line in enumerate(p.read_text().splitlines(), 1)
           if re.search(r"\btorch\.(cuda\.)?manual_seed(_all)?\(|\bnp\.random\.seed\(|\brandom\.seed\(", line)]
    assert not bad, bad


def test_scripts_and_benchmarks_use_no_private_names():
    bad = []
    for p in sorted([*(ROOT / "scripts").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("visualmixer"):
                names = [a.name for a in node.names]
                if any(part.startswith("_") for part in node.module.split(".")) or any(
                    n.startswith("_") for n in names
                ):
                    bad.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad


def _long_functions():
    out = []
    for p in _modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
                    n -= first.end_lineno - first.lineno + 1  # the docstring is not code
                doc = ast.get_docstring(node) or ""
                if n > MAX_FUNCTION_LINES and "long because" not in doc.lower():
                    out.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_module_over_the_size_limit():
    sizes = {p: len(p.read_text().splitlines()) for p in _modules()}
    big = [f"{p.relative_to(ROOT)} ({n})" for p, n in sizes.items() if n > MAX_MODULE_LINES]
    assert not big, big


def test_no_function_over_the_size_limit_without_a_stated_reason():
    """A function over 80 lines (docstring not counted) says why in its docstring ("Long because ...")."""
    assert not _long_functions(), _long_functions()


@pytest.mark.parametrize("layer", LAYERS)
def test_architecture_doc_names_every_module(layer):
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for p in sorted((PKG / layer).rglob("*.py")):
        if p.name == "__init__.py":
            continue
        rel = p.relative_to(PKG).as_posix()
        assert rel in doc or rel.rsplit("/", 1)[-1] in doc, f"docs/architecture.md does not mention {rel}"
