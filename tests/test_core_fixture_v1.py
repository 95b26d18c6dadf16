"""Plans made by the first permutation generator (v1) keep restoring bit-exactly.

``tests/fixtures/core_v1/core_v1.pt`` holds originals, obfuscated images and ``Plans.to_dict()``
made by the core before its generator changed (see ``make_core_fixture.py`` there; never rerun).
"""

from pathlib import Path

import pytest
import torch

import visualmixer as vm

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "core_v1" / "core_v1.pt"
KEY = vm.Key.from_seed(20261127)
CASES = torch.load(FIXTURE, weights_only=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_v1_plans_restore_bit_exactly(name):
    case = CASES[name]
    plans = vm.Plans.from_dict(case["plans"])
    back = vm.restore(case["obfuscated"], plans, key=KEY, ids=case["ids"])
    assert back.dtype == case["original"].dtype
    assert torch.equal(back, case["original"])
    assert not torch.equal(case["obfuscated"], case["original"])
