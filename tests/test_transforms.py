import pickle

import numpy as np
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


@pytest.mark.parametrize("kwargs, error, match", [({"region": "4"}, ValueError, "region must be a positive int"),
                                                  ({"region": 0}, ValueError, "region must be a positive int"),
                                                  ({"channel_order": 1}, TypeError, "channel_order must be a bool")])
def test_bad_options_fail_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        vm.VisualMixer(target_vfe=0.5, **kwargs)


def _pil(mode: str, size=(40, 30)):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    bands = len(Image.new(mode, (1, 1)).getbands())
    shape = (size[1], size[0]) if bands == 1 else (size[1], size[0], bands)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


@pytest.mark.parametrize("mode, fix", [("RGBA", "'RGB'"), ("LA", "'L'")])
def test_alpha_is_refused_clearly_not_dropped(mode, fix):
    t = vm.VisualMixer(target_vfe=0.5)
    with pytest.raises(ValueError) as exc:
        t(_pil(mode))
    msg = str(exc.value)
    assert f"mode '{mode}'" in msg and "alpha channel" in msg and f"convert({fix})" in msg
    keyed = vm.VisualMixer(target_vfe=0.5, key=vm.Key.generate())
    import numpy as np

    with pytest.raises(ValueError, match=r"shape \(30, 40, 4\).*array\[\.\.\., :3\]"):
        keyed.forward_with_ids(np.zeros((30, 40, 4), np.uint8), ["a"])


def test_grey_pil_image_gives_no_warning_and_stays_pil():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "The given NumPy array is not writable"
        out = vm.VisualMixer(target_vfe=0.5)(_pil("L"))
    assert out.mode == "L" and out.size == (40, 30)


def test_readme_pipeline_gives_float_tensors_for_pil_input():
    t = v2.Compose([v2.PILToTensor(), vm.VisualMixer(target_vfe=0.5), v2.ToDtype(torch.float32, scale=True)])
    out = t(_pil("RGB"))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (3, 30, 40)
    t2 = v2.Compose([v2.ToImage(), vm.VisualMixer(target_vfe=0.5), v2.ToDtype(torch.float32, scale=True)])
    out2 = t2(_pil("RGB"))
    assert isinstance(out2, tv_tensors.Image) and out2.dtype == torch.float32


@pytest.mark.parametrize("image", [tv_tensors.Image, lambda x: _pil("RGB", size=(32, 32))], ids=["tv_image", "pil"])
def test_a_plain_tensor_target_beside_an_image_passes_through_as_in_torchvision(image):
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    heat = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 32, 32)  # a dense target, a plain tensor
    _, flipped = v2.RandomHorizontalFlip(p=1.0)(image(x), heat)
    assert torch.equal(flipped, heat)  # torchvision's rule: beside an explicit image, a plain tensor is no image
    img = image(x)
    out, target = vm.VisualMixer(0.5)(img, heat)
    assert torch.equal(target, heat)
    assert not np.array_equal(np.asarray(out), np.asarray(img))


def test_two_image_shaped_plain_tensors_are_refused_and_a_lone_one_is_still_obfuscated():
    """torchvision takes the first plain tensor as the image; for a privacy transform a wrong
    guess leaves the image unprotected, so with two image-shaped ones and nothing marked it refuses."""
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    heat = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 32, 32)
    for pair in ((x, heat), (heat, x)):
        with pytest.raises(TypeError, match="2 plain tensors shaped like images.*tv_tensors.Image"):
            vm.VisualMixer(0.5)(*pair)
    out, target = vm.VisualMixer(0.5)(tv_tensors.Image(x), heat)  # marked: the other passes through
    assert not torch.equal(out, x) and torch.equal(target, heat)
    assert torch.equal(out.flatten().sort().values, x.flatten().sort().values)
    lone = vm.VisualMixer(0.5)(x)
    assert not torch.equal(lone, x) and torch.equal(lone.flatten().sort().values, x.flatten().sort().values)
    # a label tensor ahead of the image tensor: torchvision would take the label as the image; refused
    with pytest.raises(TypeError, match="only the first plain tensor"):
        vm.VisualMixer(0.5)(torch.tensor(3), x)
