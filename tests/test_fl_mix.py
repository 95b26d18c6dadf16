"""Federated learning with keyed region mixing per client (`visualmixer fl --mix K`)."""

import numpy as np
import pytest
import torch

from visualmixer.fl import task


def test_client_mixes_its_own_partition_offline_and_online():
    cfg = task.FLConfig(target_vfe=0.5, mix=2)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.arange(16) % 2
    idx = np.arange(100, 116)
    key = task.client_key(cfg, 0)
    off = task.obfuscate_local(x, idx, cfg, key, 1, labels=y)
    assert off.shape == x.shape and not torch.equal(off, x)
    assert torch.equal(off, task.obfuscate_local(x, idx, cfg, key, 2, labels=y))  # offline: one release
    # regions move between same-class images: per-image value multisets are no longer kept
    assert not torch.equal(off.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    # but the class's multiset of values is
    for c in (0, 1):
        assert torch.equal(off[y == c].flatten().sort().values, x[y == c].flatten().sort().values)
    cfg.mode = "online"
    assert not torch.equal(task.obfuscate_local(x, idx, cfg, key, 1, labels=y),
                           task.obfuscate_local(x, idx, cfg, key, 2, labels=y))
    with pytest.raises(ValueError, match="labels"):
        task.obfuscate_local(x, idx, cfg, key, 1)


def test_run_config_mix():
    assert task.FLConfig.from_run_config({"mix": 4}).mix == 4
    with pytest.raises(ValueError, match="mix must be 0"):
        task.FLConfig.from_run_config({"mix": 1})
