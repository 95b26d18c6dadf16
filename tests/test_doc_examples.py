"""The examples users copy work: every module's docstring examples (doctest) and the ```python
blocks of README.md and docs/*.md, each run in a fresh folder.

Modules are found by scanning src/visualmixer for ``>>> ``, so new examples are tested without
touching this file. A page's block runs as it stands, with at most the names it says the reader
brings (GIVEN), unless SKIP names it with the reason.
"""

import doctest
import importlib
import io
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Examples that need an optional package the core install does not have.
MODULE_NEEDS = {"visualmixer.data.hf": "datasets"}

# Blocks not run: (page, text in the block) -> why. Keep this short; fix a block rather than list it.
SKIP = {
    ("training.md", "quick_compare("): "needs a GPU (device='cuda') and minutes of training",
    ("federated.md", "run_loopback("): "needs Fashion-MNIST and starts Flower's SuperLink and SuperNodes",
    ("performance.md", "process_time"): "timing recipes: dozens of calls on 64 photos at 224 px (seconds)",
}


def _doc_modules():
    paths = sorted(p for p in (SRC / "visualmixer").rglob("*.py") if ">>> " in p.read_text())
    return [".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__") for p in paths]


def _blocks():
    """``(page, first line, code)`` of every ```python block (indented ones too)."""
    out = []
    for page in PAGES:
        lines, start, indent = page.read_text().splitlines(), None, ""
        for i, line in enumerate(lines, 1):
            if start is None and line.strip().startswith("```python"):
                start, indent = i, line[: len(line) - len(line.lstrip())]
            elif start is not None and line.strip() == "```" and line.startswith(indent):
                out.append((page, start, textwrap.dedent("\n".join(lines[start:i - 1]))))
                start = None
    return out


BLOCKS = _blocks()


def _tiny_hf_dataset():
    datasets = pytest.importorskip("datasets")
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    return datasets.Dataset.from_dict({"image": list(pixels)},
                                      features=datasets.Features({"image": datasets.Image()}))


def _photo_folder():
    """What the folder example expects in its working folder: a key and photos/cats/*.jpg."""
    from PIL import Image

    from visualmixer.core.keys import Key
    from visualmixer.data.samples import builtin_photos

    Path("secret").mkdir()
    Key.generate().save("secret/faces.key")
    Path("photos/cats").mkdir(parents=True)
    for i, x in enumerate(builtin_photos(32)[1][:3], 1):
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(f"photos/cats/{i:03d}.jpg")
    return {}


def _tensor_dataset():
    data = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return {"base_dataset": torch.utils.data.TensorDataset(data, torch.arange(8)), "epochs": 1}


def _key():
    from visualmixer.core.keys import Key

    return Key.from_seed(0)


# Names a block leaves to the reader, as the page says (a data set, the key, files): (page, text
# in the block) -> a function, run in the block's folder, that returns them.
GIVEN = {
    ("README.md", "obfuscate_hf(ds"): lambda: {"ds": _tiny_hf_dataset(), "key": _key()},
    ("tools.md", "obfuscate_hf(ds"): lambda: {"ds": _tiny_hf_dataset(), "key": _key()},
    ("tools.md", "obfuscate_folder("): _photo_folder,
    ("tools.md", "ObfuscatedDataset(base_dataset"): lambda: {**_tensor_dataset(), "key": _key()},
}


def _match(table, page, code):
    return [v for (name, text), v in table.items() if name == page.name and text in code]


@pytest.fixture()
def sandbox(tmp_path, monkeypatch):
    """A fresh working folder (temp files go there too); the global state examples may change
    (registries, thread count, block size, the global RNG) is put back afterwards."""
    from visualmixer.core import permute
    from visualmixer.eval.attacks import registry as attacks
    from visualmixer.eval.methods import registry as methods

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(permute, "SHUFFLE_BLOCK_ENTRIES", permute.SHUFFLE_BLOCK_ENTRIES)
    saved = [(r, dict(r)) for r in (methods._REGISTRY, attacks._REGISTRY)]
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        yield tmp_path
    torch.set_num_threads(threads)
    for registry, entries in saved:
        registry.clear()
        registry.update(entries)


@pytest.mark.parametrize("name", _doc_modules())
def test_module_examples(name, sandbox):
    if name in MODULE_NEEDS:
        pytest.importorskip(MODULE_NEEDS[name])
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{name} has '>>> ' lines but no example doctest finds (not in a docstring?)"
    runner, report = doctest.DocTestRunner(optionflags=FLAGS), io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)  # each with a copy of the module's names, cleared after
    assert runner.failures == 0, report.getvalue()


def test_every_listed_block_is_on_its_page():
    """A SKIP or GIVEN entry whose block was edited away would silently do nothing."""
    for page, text in [*SKIP, *GIVEN]:
        assert any(p.name == page and text in code for p, _, code in BLOCKS), (page, text)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("page, line, code", BLOCKS, ids=[f"{p.name}:{n}" for p, n, _ in BLOCKS])
def test_page_block(page, line, code, sandbox):
    if reason := _match(SKIP, page, code):
        pytest.skip(reason[0])
    names = {"__name__": "__main__"}
    for given in _match(GIVEN, page, code):
        names.update(given())
    # padded so that a traceback's line numbers are the page's
    exec(compile("\n" * line + code, f"{page.relative_to(ROOT)}", "exec"), names)
