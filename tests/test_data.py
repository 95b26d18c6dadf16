"""visualmixer.data: the ObfuscatedDataset wrapper across DataLoader workers, and the Hugging Face
helper (its batch function always; a real `datasets.Dataset.map` when `datasets` is installed)."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

import visualmixer as vm
from visualmixer.core import mixer
from visualmixer.data import ObfuscatedDataset, hf_batch_transform

KEY = vm.Key.from_seed(11)


def _smooth(n: int, size: int = 32) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    base = (127 + 100 * torch.sin(xx / 4.0) * torch.cos(yy / 5.0)).to(torch.uint8)
    return base.expand(n, 3, size, size).clone()  # n identical images


def _epoch_batches(loader) -> torch.Tensor:
    return torch.cat([x for x, _y in loader])


def test_two_dataloader_workers_distinct_and_reproducible():
    base = TensorDataset(_smooth(8), torch.arange(8))
    ds = ObfuscatedDataset(base, KEY, target_vfe=0.5, mode="online")
    loader = DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True,
                        multiprocessing_context="fork")
    ds.set_epoch(0)
    e0 = _epoch_batches(loader)
    ds.set_epoch(1)  # reaches the persistent workers through shared memory
    e1 = _epoch_batches(loader)
    # identical inputs, yet every index gets its own permutation, in both workers
    flat = {e0[i].numpy().tobytes() for i in range(8)}
    assert len(flat) == 8
    assert not any(torch.equal(e0[i], e1[i]) for i in range(8))  # online: a new shuffle per epoch
    # reproducible: the same as in the main process, and as with one worker
    for epoch, got in ((0, e0), (1, e1)):
        ds.set_epoch(epoch)
        single = _epoch_batches(DataLoader(ds, batch_size=3, num_workers=0))
        assert torch.equal(single, got)
    ds.set_epoch(1)
    one = _epoch_batches(DataLoader(ds, batch_size=4, num_workers=1, multiprocessing_context="fork"))
    assert torch.equal(one, e1)
    # each sample equals what obfuscate() gives for id (index, epoch)
    res = vm.obfuscate(base[5][0].unsqueeze(0), key=KEY, ids=[(5, 1)], target_vfe=0.5)
    assert torch.equal(res.images[0], e1[5])


def test_batched_getitems_equals_per_item_and_is_one_call(monkeypatch):
    # different images (so a batch mix-up would show), online ids (index, epoch)
    imgs = torch.stack([torch.roll(_smooth(1)[0], shifts=3 * i, dims=2) for i in range(6)])
    base = TensorDataset(imgs, torch.arange(6))
    ds = ObfuscatedDataset(base, KEY, target_vfe=0.6, mode="online", epoch=2)
    per_item = [ds[i] for i in (4, 0, 5)]
    calls = []
    real = vm.obfuscate

    def counting(images, **kw):
        calls.append(images.shape[0] if hasattr(images, "shape") and images.ndim == 4 else 1)
        return real(images, **kw)

    monkeypatch.setattr(mixer, "obfuscate", counting)  # the library imports it from its home module
    batch = ds.__getitems__([4, 0, 5])
    assert calls == [3]  # the whole batch in one call
    for (xa, ya), (xb, yb) in zip(per_item, batch, strict=True):
        assert torch.equal(xa, xb) and int(ya) == int(yb)
    calls.clear()
    got = _epoch_batches(DataLoader(ds, batch_size=3, num_workers=0))  # DataLoader uses it too
    assert calls == [3, 3]
    assert torch.equal(got, torch.stack([ds[i][0] for i in range(6)]))


@pytest.mark.parametrize("return_vfe", [False, True])
def test_batch_equals_the_dataloader_collation(return_vfe):
    imgs = torch.stack([torch.roll(_smooth(1)[0], shifts=3 * i, dims=2) for i in range(6)])
    extra = torch.arange(6, dtype=torch.float32) / 7
    ds = ObfuscatedDataset(TensorDataset(imgs, torch.arange(6), extra), KEY, target_vfe=0.6, mode="online",
                           epoch=1, return_vfe=return_vfe)
    want = torch.utils.data.default_collate(ds.__getitems__([5, 2, 3]))
    got = ds.batch([5, 2, 3])
    assert len(got) == len(want) == 3 + return_vfe
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_batch_of_other_datasets_is_collated_from_the_samples():
    class Pairs(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return _smooth(1)[0].roll(i, dims=1), i

    ds = ObfuscatedDataset(Pairs(), KEY, target_vfe=0.5)
    images, labels = ds.batch([3, 1])
    assert labels.tolist() == [3, 1] and torch.equal(images, torch.stack([ds[3][0], ds[1][0]]))


def test_offline_mode_and_ids():
    base = TensorDataset(_smooth(4), torch.arange(4))
    ds = ObfuscatedDataset(base, KEY, mode="offline", ids=["a", "b", "c", "d"])
    first = ds[2][0]
    ds.set_epoch(5)
    assert torch.equal(ds[2][0], first)  # offline: fixed per sample
    assert ds.image_id(2) == "c"
    img, _rest, res = ds.obfuscate_item(2)
    restored = vm.restore(img.unsqueeze(0), res.plans, key=KEY, ids=["c"])
    assert torch.equal(restored[0], base[2][0])
    by_fn = ObfuscatedDataset(base, KEY, ids=lambda i: f"img{i}")
    assert by_fn.image_id(3) == "img3"


def test_pil_and_numpy_samples_keep_their_kind():
    class Pil(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            arr = _smooth(1)[0].permute(1, 2, 0).numpy()
            return Image.fromarray(arr), i, "extra"

    ds = ObfuscatedDataset(Pil(), KEY)
    img, label, extra = ds[1]
    assert isinstance(img, Image.Image) and img.size == (32, 32) and (label, extra) == (1, "extra")


def test_pickling_and_bad_arguments():
    ds = ObfuscatedDataset(TensorDataset(_smooth(2), torch.arange(2)), KEY, mode="online", epoch=3)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.epoch == 3 and torch.equal(clone[1][0], ds[1][0])
    clone.set_epoch(4)
    assert ds.epoch == 3  # a plain copy does not share the epoch
    assert copy.deepcopy(ds).epoch == 3
    with pytest.raises(ValueError, match="mode"):
        ObfuscatedDataset(ds, KEY, mode="sometimes")
    with pytest.raises(ValueError, match="target_vfe"):
        ObfuscatedDataset(ds, KEY, target_vfe=2)
    with pytest.raises(TypeError, match="key"):
        ObfuscatedDataset(ds, b"\0" * 32)
    with pytest.raises(ValueError, match="region must be a positive int"):
        ObfuscatedDataset(ds, KEY, region="4")
    with pytest.raises(ValueError, match="epoch"):
        ds.set_epoch(-1)


def _hf_rows():
    arr = _smooth(1)[0].permute(1, 2, 0).numpy()
    images = [Image.fromarray(arr), Image.fromarray(np.ascontiguousarray(arr[:24])),
              Image.fromarray(arr[..., 0]), Image.fromarray(arr)]
    return {"image": images, "label": [0, 1, 2, 3]}


def test_hf_batch_transform_without_datasets():
    rows = _hf_rows()
    fn = hf_batch_transform(KEY, plan_column="plan")
    out = fn(rows, [10, 11, 12, 13])
    assert [im.size for im in out["image"]] == [im.size for im in rows["image"]]
    assert [im.mode for im in out["image"]] == ["RGB", "RGB", "L", "RGB"]
    assert len(out["vfe"]) == 4 and all(v > 0 for v in out["vfe"])
    # ids are the row indices: the same rows in another batch split give the same result
    alone = fn({"image": rows["image"][3:], "label": [3]}, [13])
    assert np.array_equal(np.asarray(alone["image"][0]), np.asarray(out["image"][3]))
    # the plan column restores the original
    plan = vm.Plans.from_dict(json.loads(out["plan"][0]))
    obf = torch.from_numpy(np.array(out["image"][0])).permute(2, 0, 1).unsqueeze(0)
    back = vm.restore(obf, plan, key=KEY, ids=[10])
    assert np.array_equal(back[0].permute(1, 2, 0).numpy(), np.asarray(rows["image"][0]))


def test_hf_dataset_map():
    datasets = pytest.importorskip(
        "datasets", reason="Hugging Face `datasets` is not installed (pip install 'visualmixer[hf]')"
    )
    from visualmixer.data import obfuscate_hf

    rows = _hf_rows()
    ds = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    out = obfuscate_hf(ds, KEY, batch_size=2, load_from_cache_file=False)
    assert out.num_rows == 4 and "vfe" in out.column_names
    direct = hf_batch_transform(KEY)(rows, [0, 1, 2, 3])
    for i in range(4):
        assert np.array_equal(np.asarray(out[i]["image"]), np.asarray(direct["image"][i]))


def test_readme_hf_example_stores_plans_that_restore():
    """README's Hugging Face block, run as written: the offline result is restorable with the key and
    the plans it keeps, and the shared data set no longer holds them."""
    import re
    from pathlib import Path

    datasets = pytest.importorskip("datasets")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "obfuscate_hf(" in b)
    rows = _hf_rows()
    ds = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    scope = {"ds": ds, "key": KEY}
    exec(block, scope)  # the README's own example
    assert "plans" in scope, "the example keeps no plans: its result cannot be restored"
    stored, plans = scope["stored"], scope["plans"]
    assert "plan" not in stored.column_names and len(plans) == 4
    for n in (0, 2):  # an RGB and a grey ("L") row
        obf = torch.from_numpy(np.array(stored[n]["image"]))
        obf = obf[None, None] if obf.ndim == 2 else obf.permute(2, 0, 1)[None]
        back = vm.restore(obf, vm.Plans.from_dict(json.loads(plans[n])), key=KEY, ids=[n])
        want = np.asarray(rows["image"][n])
        assert np.array_equal(back[0, 0].numpy() if want.ndim == 2 else back[0].permute(1, 2, 0).numpy(), want)
    assert ds[0]["image"].size == rows["image"][0].size  # the online transform reads


def test_obfuscate_indices_plans_restore_and_return_vfe():
    """The batched result of an offline dataset carries plans that restore the originals; return_vfe
    appends each sample's achieved VFE; a TensorDataset batch equals the per-item samples."""
    imgs = torch.stack([torch.roll(_smooth(1)[0], shifts=5 * i, dims=1) for i in range(5)])
    ds = ObfuscatedDataset(TensorDataset(imgs, torch.arange(5)), KEY, target_vfe=0.5, ids=list("abcde"))
    res = ds.obfuscate_indices([3, 1])
    assert torch.equal(res.images[0], ds[3][0]) and torch.equal(res.images[1], ds[1][0])
    back = vm.restore(res.images, res.plans, key=KEY, ids=[ds.image_id(i) for i in (3, 1)])
    assert torch.equal(back, imgs[[3, 1]])
    with_vfe = ObfuscatedDataset(TensorDataset(imgs, torch.arange(5)), KEY, target_vfe=0.5, ids=list("abcde"),
                                 return_vfe=True)
    batch = with_vfe.__getitems__([3, 1])
    assert [len(s) for s in batch] == [3, 3] and torch.equal(batch[0][0], res.images[0])
    assert batch[0][2] == pytest.approx(float(res.vfe[0])) and batch[0][2] >= 0.5
    assert with_vfe[3][2] == pytest.approx(batch[0][2])
    assert [int(s[1]) for s in batch] == [3, 1]
    with pytest.raises(TypeError, match="obfuscate_indices"):
        ObfuscatedDataset([(np.zeros((8, 8, 3), np.uint8), 0)], KEY).obfuscate_indices([0])


def test_obfuscate_set_matches_the_dataset_offline_and_online():
    from visualmixer.data.wrapper import obfuscate_set

    imgs = torch.stack([torch.roll(_smooth(1)[0], shifts=5 * i, dims=1) for i in range(5)])
    ids = [10, 11, 12, 13, 14]
    for epoch in (None, 2):
        out, v = obfuscate_set(imgs, 0.5, key=KEY, ids=ids, batch=2, epoch=epoch)
        mode = "offline" if epoch is None else "online"
        ds = ObfuscatedDataset(TensorDataset(imgs, torch.arange(5)), KEY, 0.5, mode, ids=ids, epoch=epoch or 0)
        assert torch.equal(out, torch.stack([ds[i][0] for i in range(5)]))
        assert v.dtype == torch.float64 and v.shape == (5,)
