import getpass
import os
import tempfile

import pytest
import torch

# Tests never touch the network (../shared/DATA.md): make hub libraries fail fast if asked.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _temp_folder_of_the_session(tmp_path_factory):
    """What the library and the CLI put in the temp folder (the per-destination lock files, dask's
    scratch space, throwaway TLS files) goes to a folder in pytest's temp tree (which pytest
    prunes), for this process and the processes it starts, from the first fixture on: nothing is
    left behind in /tmp. (A MonkeyPatch of its own: a test's ``monkeypatch.undo()`` keeps it.)"""
    folder = str(tmp_path_factory.mktemp("tmpdir"))
    # torch.compile's cache (a cache, kept between runs on purpose) stays where it is: test_fused
    # would compile from scratch every time
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # (torch's own fallback for a user without a name)
        user = f"uid_{os.getuid()}"
    inductor = os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")
    os.makedirs(inductor, exist_ok=True)
    os.symlink(inductor, os.path.join(folder, os.path.basename(inductor)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", folder)
        mp.setattr(tempfile, "tempdir", folder)
        yield


@pytest.fixture(autouse=True)
def _global_rng_put_back():
    """Tests that seed torch's global generator (``torch.manual_seed``) leave it as they found
    it: a test's draws do not depend on which tests ran before it in the same worker."""
    with torch.random.fork_rng(devices=[]):
        yield


@pytest.fixture(scope="session")
def photos():
    """Built-in photos at 128 px: (names, (N, 3, 128, 128) uint8)."""
    from visualmixer.data.samples import builtin_photos

    return builtin_photos(128)


@pytest.fixture()
def mix_calls(monkeypatch):
    """``calls = mix_calls(module)``: the keyword arguments of every ``mix`` call ``module`` makes
    from then on (the calls still run)."""

    def spy_on(module) -> list[dict]:
        calls, real = [], module.mix

        def spy(images, labels, **kw):
            calls.append(kw)
            return real(images, labels, **kw)

        monkeypatch.setattr(module, "mix", spy)
        return calls

    return spy_on


@pytest.fixture()
def class_tree(tmp_path):
    """A key (``k.key``) and ``src/{cat: 6, dog: 4 images}``, with the common arguments of a
    ``visualmixer obfuscate --mix 2`` run into ``dst`` with the manifest ``m.jsonl``."""
    from types import SimpleNamespace

    from visualmixer.cli import main

    try:
        from _vm_files import class_folders
    except ImportError:  # tests/ as a package
        from ._vm_files import class_folders
    key = tmp_path / "k.key"
    assert main(["keygen", str(key), "-q"]) == 0
    src = tmp_path / "src"
    ids = class_folders(src, {"cat": 6, "dog": 4})
    dst, man = tmp_path / "dst", tmp_path / "m.jsonl"
    return SimpleNamespace(key=key, src=src, ids=ids, dst=dst, man=man,
                           common=["--key", str(key), "-q", "--mix", "2", "--manifest", str(man)])
