import pickle

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

import visualmixer as vm


def test_compose_and_module():
    t = v2.Compose([vm.VisualMixer(target_vfe=0.5), v2.ToDtype(torch.float32, scale=True)])
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    out = t(x)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert isinstance(vm.VisualMixer(), torch.nn.Module)


def test_fresh_randomness_each_call_and_labels_pass_through():
    t = vm.VisualMixer(target_vfe=0.5)
    x = tv_tensors.Image(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8))
    a, label = t(x, 7)
    b, _ = t(x, 7)
    assert isinstance(a, tv_tensors.Image) and label == 7
    assert not torch.equal(a, b)
    assert torch.equal(a.flatten().sort().values, x.flatten().sort().values)


def test_keyed_needs_ids_and_is_reproducible():
    key = vm.Key.generate()
    t = vm.VisualMixer(target_vfe=0.5, key=key)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(ValueError, match="ids"):
        t(x)
    assert torch.equal(t.forward_with_ids(x, [1, 2]), t.forward_with_ids(x, [1, 2]))


def test_picklable_for_dataloader_workers():
    t = pickle.loads(pickle.dumps(vm.VisualMixer(0.4, key=vm.Key.generate())))
    assert t.target_vfe == 0.4


def test_bad_target():
    with pytest.raises(ValueError, match="target_vfe"):
        vm.VisualMixer(target_vfe=2)
