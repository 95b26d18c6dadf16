"""The data layer's edges: images passed through unprotected, ids off by a negative index, options
accepted that did nothing or the wrong thing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

import visualmixer as vm
from visualmixer.data.datasets import load_dataset
from visualmixer.data.filesets import load_image_folder
from visualmixer.data.hf import hf_batch_transform
from visualmixer.data.wrapper import ObfuscatedDataset, obfuscate_set
from visualmixer.tools.imageio import read_image

KEY = vm.Key(bytes(range(32)))


def _images(n=6, c=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("shape", [(32, 32, 3), (32, 32)])
def test_transform_obfuscates_numpy_images(shape):
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = vm.VisualMixer(0.5)(a)
    assert isinstance(out, np.ndarray) and out.shape == a.shape and out.dtype == np.uint8
    assert not np.array_equal(out, a) and np.array_equal(np.sort(out, axis=None), np.sort(a, axis=None))


def test_transform_leaves_a_numpy_mask_beside_an_image_alone():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    mask = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    out_img, out_mask = vm.VisualMixer(0.5)(img, mask)
    assert np.array_equal(out_mask, mask) and not np.array_equal(np.asarray(out_img), np.asarray(img))


@pytest.mark.parametrize("inpt", [torch.zeros(28, 28, dtype=torch.uint8), 3, "x"])
def test_transform_refuses_input_without_an_image(inpt):
    with pytest.raises(TypeError, match="VisualMixer found no image to obfuscate"):
        vm.VisualMixer(0.5)(inpt)


def test_transform_refuses_numpy_rgba():
    with pytest.raises(ValueError, match=r"numpy array of shape \(32, 32, 4\).*array\[..., :3\]"):
        vm.VisualMixer(0.5)(np.zeros((32, 32, 4), np.uint8))


def test_dataset_negative_index_is_the_same_sample_as_its_positive_one():
    x = _images()
    ds = ObfuscatedDataset(TensorDataset(x, torch.arange(6)), KEY, 0.5)
    assert torch.equal(ds[-1][0], ds[5][0]) and ds.image_id(-1) == ds.image_id(5) == 5
    assert torch.equal(ds.batch([-1, 0])[0], ds.batch([5, 0])[0])
    assert torch.equal(ds.__getitems__([-2])[0][0], ds[4][0])
    res = ds.obfuscate_indices([-1])
    assert torch.equal(vm.restore(res.images, res.plans, key=KEY, ids=[ds.image_id(-1)]), x[5:])
    with pytest.raises(IndexError, match="index 6 out of range for 6 samples"):
        ds.image_id(6)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"target_vfe": "abc"}, TypeError, "target_vfe"),
    ({"target_vfe": None}, TypeError, "target_vfe"),
    ({"target_vfe": True}, TypeError, "target_vfe"),
    ({"target_vfe": 1.5}, ValueError, "target_vfe"),
    ({"channel_order": "no"}, TypeError, "channel_order: expected a bool"),
    ({"return_vfe": "no"}, TypeError, "return_vfe: expected a bool"),
    ({"epoch": -1}, ValueError, "epoch: expected a non-negative int"),
    ({"epoch": 1.5}, ValueError, "epoch"),
    ({"ids": 5}, TypeError, "ids: expected a sequence"),
    ({"ids": "abcdef"}, TypeError, "ids: expected a sequence"),
    ({"key": b"0" * 32}, TypeError, "key must be a visualmixer.Key"),
])
def test_dataset_options_are_checked_naming_them(kwargs, exc, match):
    args = {"key": KEY, **kwargs}
    with pytest.raises(exc, match=match):
        ObfuscatedDataset(TensorDataset(_images()), args.pop("key"), **args)


def test_dataset_refuses_rgba_images_as_the_transform_does():
    rgba = [(Image.new("RGBA", (16, 16)), 0)]
    with pytest.raises(ValueError, match="ObfuscatedDataset got a PIL image in mode 'RGBA'"):
        ObfuscatedDataset(rgba, KEY, 0.5)[0]


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"batch": -1}, ValueError, "batch: expected an int >= 1"),
    ({"batch": 0}, ValueError, "batch"),
    ({"ids": ["a", "b"]}, ValueError, r"ids: expected one id per image \(6\), got 2"),
])
def test_obfuscate_set_checks_its_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        obfuscate_set(_images(), 0.5, key=KEY, **kwargs)
    with pytest.raises(TypeError, match="images: expected a tensor"):
        obfuscate_set(np.zeros((6, 32, 32, 3), np.uint8), 0.5, key=KEY)


def test_hf_transform_refuses_alpha():
    fn = hf_batch_transform(None)
    with pytest.raises(ValueError, match="the image column got a PIL image in mode 'RGBA'"):
        fn({"image": [Image.new("RGBA", (16, 16))]})


@pytest.mark.parametrize("as_tensor", [False, True], ids=["array", "tensor"])
def test_hf_transform_keeps_the_shape_of_grey_images(as_tensor):
    """(H, W) images (what ds.with_format("numpy") gives for an MNIST-like set) come back (H, W), as
    VisualMixer hands back an (H, W) array; (H, W, 1) arrays and (1, H, W) tensors keep their axis."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(3)]
    grey = [torch.from_numpy(a) for a in arrays] if as_tensor else arrays
    fn = hf_batch_transform(KEY, plan_column="plan")
    out = fn({"image": grey}, indices=[0, 1, 2])
    assert vm.VisualMixer(0.5)(arrays[0]).shape == (28, 28)
    for n, (before, after) in enumerate(zip(grey, out["image"], strict=True)):
        assert type(after) is type(before) and tuple(after.shape) == (28, 28) and after.dtype == before.dtype
        assert not np.array_equal(np.asarray(after), arrays[n])
        # the plan restores the original (restore takes (N, C, H, W))
        plan = vm.Plans.from_dict(json.loads(out["plan"][n]))
        back = vm.restore(torch.as_tensor(np.asarray(after))[None, None], plan, key=KEY, ids=[n])
        assert np.array_equal(back[0, 0].numpy(), arrays[n])
    with_axis = grey[0][None] if as_tensor else arrays[0][..., None]
    kept = fn({"image": [with_axis]}, indices=[0])["image"][0]
    assert tuple(kept.shape) == tuple(with_axis.shape)


def _folder(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / cls / f"{i}.png")
    return tmp_path


@pytest.mark.parametrize("kwargs, match", [
    ({"size": 0}, "size=0 is not allowed"),
    ({"size": -3}, "size=-3 is not allowed"),
    ({"size": 2.5}, "size=2.5 is not allowed"),
    ({"size": (4, 0)}, r"size=\(4, 0\) is not allowed"),
    ({"channels": 5}, "channels=5 is not allowed"),
    ({"channels": None}, "channels=None is not allowed"),
])
def test_image_folder_options_are_checked(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_image_folder(_folder(tmp_path), "train", test_fraction=0.0, **kwargs)


def test_image_folder_reads_files_as_the_tools_do(tmp_path):
    from test_audit_userdata import make_tool_edge_files

    grey, exif = make_tool_edge_files(tmp_path)  # 16-bit grey PNGs; JPEGs turned upright by their EXIF tag
    got = load_image_folder(grey, "train", test_fraction=0.0, channels=1)
    assert torch.equal(got.images, torch.stack([read_image(grey / f"c{c}" / "0.png") for c in range(2)]))
    got = load_image_folder(exif, "train", test_fraction=0.0, channels=3)
    assert got.images.shape == (2, 3, 16, 8)
    assert torch.equal(got.images, torch.stack([read_image(exif / f"c{c}" / "0.jpg") for c in range(2)]))


def test_image_folder_loads_images_pillow_only_warns_about(tmp_path, monkeypatch):
    """Between MAX_IMAGE_PIXELS and twice it Pillow warns and opens; the data sets load such
    images as they did through Pillow (the folder tools refuse them without max_pixels)."""
    from PIL import Image as PILImage

    from visualmixer.tools.imageio import ImageReadError, load_image

    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
        PILImage.fromarray(np.full((12, 12), 40 * c, np.uint8)).save(tmp_path / f"c{c}" / "0.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # 144 pixels: over it, under twice it
    with pytest.raises(ImageReadError, match="decompression-bomb limit"):
        load_image(tmp_path / "c0" / "0.png")
    assert load_image_folder(tmp_path, "train", test_fraction=0.0, channels=1).images.shape == (2, 1, 12, 12)


def test_photos_size_zero_is_refused_not_replaced():
    with pytest.raises(ValueError, match="size=0 is not allowed"):
        load_dataset("photos", "train", size=0)
    with pytest.raises(ValueError, match="size=2 is not allowed: the photos are made at 4 px or more"):
        load_dataset("photos", "train", size=2)


def test_train_names_the_flag_of_a_photo_size_too_small(tmp_path, capsys):
    from visualmixer.cli import main

    assert main(["train", "--data", "photos", "--image-size", "2", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "--image-size 2 is not allowed: the photos are made at 4 px or more" in capsys.readouterr().err


def test_obfuscate_hf_with_worker_processes_does_not_hang():
    """Dataset.map(num_proc=...) forks workers after torch ran threads in the parent: a parallel
    operator in a worker used to wait for ever. Run in a child process, bounded in time."""
    pytest.importorskip("datasets")
    import subprocess
    import sys

    code = """
import datasets, numpy as np, torch, visualmixer as vm
from PIL import Image
from visualmixer.data.hf import obfuscate_hf
torch.set_num_threads(2)
rows = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)) for i in range(4)]
ds = datasets.Dataset.from_dict({"image": rows}).cast_column("image", datasets.Image())
key = vm.Key(bytes(range(32)))
one = obfuscate_hf(ds, key, target_vfe=0.5)
two = obfuscate_hf(ds, key, target_vfe=0.5, batch_size=2, num_proc=2)
same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(one["image"], two["image"]))
print("same" if same and torch.get_num_threads() == 2 else "differ")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("same"), done.stderr[-2000:]
