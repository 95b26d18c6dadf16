import os

import pytest
import torch

# Tests never touch the network (../shared/DATA.md): make hub libraries fail fast if asked.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def photos():
    """Built-in photos at 128 px: (names, (N, 3, 128, 128) uint8)."""
    from visualmixer.data.samples import builtin_photos

    return builtin_photos(128)
