"""Data loaders: IDX / Fashion-MNIST, the packaged-photo set, CIFAR pickles, ImageFolder."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from visualmixer.data import datasets as D


def _write_idx(path, array: np.ndarray, gz: bool = True) -> None:
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(struct.pack(">I", s) for s in array.shape)
    data = header + array.tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.fixture
def tiny_fmnist(tmp_path):
    rng = np.random.default_rng(0)
    sets = {}
    for prefix, n, gz in (("train", 12, True), ("t10k", 5, False)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if gz else ""
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", x, gz)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", y, gz)
        sets[prefix] = (x, y)
    return tmp_path, sets


def test_read_idx_round_trip_and_errors(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", a)
    _write_idx(tmp_path / "a", a, gz=False)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "a.gz"), a)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "a"), a)
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + b"\0" * 8)
    with pytest.raises(ValueError, match=r"not an IDX file \(bad magic number\)"):
        D.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\0" * 3)
    with pytest.raises(ValueError, match="10 bytes"):
        D.read_idx(tmp_path / "short")


def test_fashion_mnist_from_user_dir(tiny_fmnist):
    root, sets = tiny_fmnist
    ds = D.load_fashion_mnist("train", root=root)
    x, y = ds
    assert x.dtype == torch.uint8 and x.shape == (12, 1, 28, 28)
    assert y.dtype == torch.int64 and y.tolist() == sets["train"][1].tolist()
    assert torch.equal(x[:, 0], torch.from_numpy(sets["train"][0]))
    assert ds.classes[9] == "Ankle boot" and ds.num_classes == 10
    test3 = D.load_fashion_mnist("test", root=root, channels=3)
    assert test3.images.shape == (5, 3, 28, 28)
    assert torch.equal(test3.images[:, 0], test3.images[:, 2])


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        D.load_fashion_mnist("train", root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        D.load_fashion_mnist("validation", root=tmp_path)


@pytest.mark.skipif(not (D.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_test_split():
    x, y = D.load_fashion_mnist("test")
    assert x.shape == (10_000, 1, 28, 28)
    assert torch.equal(y.bincount(), torch.full((10,), 1000))


def test_photos_deterministic_balanced_and_disjoint():
    a = D.load_photos("train", size=16, per_class=24)
    b = D.load_photos("train", size=16, per_class=24)
    t = D.load_photos("test", size=16, per_class=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    k = len(a.classes)
    assert k >= 5 and "astronaut" in a.classes and a.classes == t.classes
    assert a.images.shape == (24 * k, 3, 16, 16) and a.images.dtype == torch.uint8
    assert torch.equal(a.labels.bincount(), torch.full((k,), 24))
    assert torch.equal(t.labels.bincount(), torch.full((k,), 8))
    # near-flat crops are rejected
    assert a.images.float().flatten(1).std(1).min() >= 12.0
    # no test crop occurs in the training crops, and another seed gives other crops
    train_set = {bytes(c.numpy()) for c in a.images}
    assert not any(bytes(c.numpy()) in train_set for c in t.images)
    c = D.load_photos("train", size=16, per_class=24, seed=1)
    assert not torch.equal(a.images, c.images)
    assert D.load_photos("test", size=16, per_class=4, channels=1).images.shape[1] == 1


def test_photo_cells_split_areas():
    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    test = D._cell_is_test(i, j)
    assert 0.2 < test.mean() < 0.3
    assert test.any(axis=0).all() and test.any(axis=1).all()  # spread over rows and columns


def _cifar_batch(n, rng, label_key, num_classes):
    return {
        b"batch_label": b"x",
        label_key: rng.integers(0, num_classes, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"f.png"] * n,
    }


def test_cifar10_pickle_format(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    batches = []
    for i in range(1, 6):
        b = _cifar_batch(3, rng, b"labels", 10)
        batches.append(b)
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(b))
    (d / "test_batch").write_bytes(pickle.dumps(_cifar_batch(4, rng, b"labels", 10)))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.decode() for n in names]}))
    train = D.load_cifar("train", root=tmp_path)
    assert train.images.shape == (15, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == sum((b[b"labels"] for b in batches), [])
    row = batches[0][b"data"][1]
    # the official layout: 1024 red values, then green, then blue, each row-major 32x32
    assert torch.equal(train.images[1, 1], torch.from_numpy(row[1024:2048].reshape(32, 32)))
    assert train.classes[3] == "cat"
    assert len(D.load_dataset("cifar10", "test", root=d)) == 4  # the batch dir itself works
    grey = D.load_dataset("cifar10", "test", root=tmp_path, channels=1)
    assert grey.images.shape == (4, 1, 32, 32)


def test_cifar100_pickle_format_and_missing(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for split, n in (("train", 6), ("test", 2)):
        b = _cifar_batch(n, rng, b"fine_labels", 100)
        b[b"coarse_labels"] = [0] * n
        (d / split).write_bytes(pickle.dumps(b))
    ds = D.load_dataset("cifar100", "train", root=tmp_path)
    assert ds.images.shape == (6, 3, 32, 32) and ds.num_classes == 100
    with pytest.raises(FileNotFoundError, match="download=True"):
        D.load_cifar("train", root=tmp_path, num_classes=10)
    with pytest.raises(ValueError, match="data directory"):
        D.load_dataset("cifar10", "train")


def _write_folder(root, sizes=((12, 10),), per_class=5):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")


def test_image_folder_split_by_fraction(tmp_path):
    _write_folder(tmp_path / "imgs", per_class=5)
    train = D.load_image_folder(tmp_path / "imgs", "train", test_fraction=0.4)
    test = D.load_image_folder(tmp_path / "imgs", "test", test_fraction=0.4)
    assert train.classes == ("cat", "dog")
    assert train.images.shape == (6, 3, 12, 10) and test.images.shape == (4, 3, 12, 10)
    assert torch.equal(test.labels.bincount(), torch.tensor([2, 2]))
    seen = {bytes(x.numpy()) for x in train.images}
    assert not any(bytes(x.numpy()) in seen for x in test.images)
    ds = D.load_dataset(f"imagefolder:{tmp_path / 'imgs'}", "train", channels=1)
    assert ds.images.shape == (8, 1, 12, 10)  # default test fraction 0.2 -> 1 of 5 per class


def test_image_folder_split_dirs_and_sizes(tmp_path):
    _write_folder(tmp_path / "train", sizes=((12, 10), (9, 9)), per_class=3)
    _write_folder(tmp_path / "val", per_class=2)
    with pytest.raises(ValueError, match="size"):
        D.load_image_folder(tmp_path, "train")
    train = D.load_image_folder(tmp_path, "train", size=8)
    assert train.images.shape == (6, 3, 8, 8)
    assert len(D.load_image_folder(tmp_path, "test")) == 4
    with pytest.raises(FileNotFoundError):
        D.load_image_folder(tmp_path / "nope")


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="fashion-mnist, photos, .*cifar10, cifar100"):
        D.load_dataset("mnist")
    with pytest.raises(ValueError, match="unknown dataset 'imagefolder:'; valid: fashion-mnist"):
        D.load_dataset("imagefolder:")


def test_imageset_checks_subset_and_channels():
    x = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    y = torch.arange(10) % 3
    ds = D.ImageSet(x, y)
    assert ds.num_classes == 3 and len(ds) == 10
    sub = ds.subset(4, seed=0)
    assert len(sub) == 4 and torch.equal(sub.images, ds.subset(4, seed=0).images)
    assert ds.subset(None) is ds and ds.subset(99) is ds
    rgb = ds.with_channels(3)
    assert rgb.images.shape == (10, 3, 4, 4)
    assert torch.equal(rgb.with_channels(1).images, x)  # luma of a grey triple is the grey
    with pytest.raises(ValueError, match="uint8"):
        D.ImageSet(x.float(), y)
    with pytest.raises(ValueError, match="labels"):
        D.ImageSet(x, y[:5])


def test_one_photo_reader_serves_demos_and_the_photos_set(monkeypatch):
    from visualmixer.core.optional import MissingExtraError
    from visualmixer.data import samples

    arr = samples.photo_array("astronaut")
    assert arr.dtype == np.uint8 and arr.shape[2] == 3 and not arr.flags.writeable
    full = samples.load_photo("astronaut", size=None)
    assert np.array_equal(full.permute(1, 2, 0).numpy(), arr)
    assert samples.load_photo("astronaut", 16).shape == (3, 16, 16)
    assert D.PHOTO_SOURCES is samples.PHOTO_SOURCES
    with pytest.raises(ValueError, match="unknown photo 'nope'.*astronaut"):
        samples.load_photo("nope")

    # a missing package: the demos say which extra installs it, the photos set skips that class
    real_require = samples.require

    def no_sklearn(module, **kw):
        if module.startswith("sklearn"):
            raise MissingExtraError("sklearn is not installed: pip install 'visualmixer[data]'")
        return real_require(module, **kw)

    monkeypatch.setattr(samples, "require", no_sklearn)
    samples._cached.cache_clear()
    try:
        with pytest.raises(MissingExtraError, match=r"visualmixer\[data\]"):
            samples.photo_array("china")
        assert samples.photo_array("china", missing_ok=True) is None
        got = D.load_photos("test", size=8, per_class=2)
        assert "china" not in got.classes and "astronaut" in got.classes
    finally:
        samples._cached.cache_clear()


def _hf_tiny():
    datasets = pytest.importorskip("datasets", reason="Hugging Face `datasets` is not installed")
    rng = np.random.default_rng(0)
    rows = {"image": [Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)) for _ in range(4)],
            "label": [0, 1, 2, 3], "name": ["a", "b", "c", "d"]}
    return datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()), rows


def test_hf_with_transform_online_fresh_shuffles_per_access():
    from visualmixer.data.hf import hf_batch_transform

    ds, rows = _hf_tiny()
    online = ds.with_transform(hf_batch_transform(None, target_vfe=0.5))
    first, again = online[1], online[1]
    assert set(first) == {"image", "label", "name", "vfe"} and first["label"] == 1
    a, b = np.asarray(first["image"]), np.asarray(again["image"])
    assert a.shape == (16, 24, 3) and not np.array_equal(a, b)  # a new shuffle on every read
    original = np.asarray(rows["image"][1])
    assert np.array_equal(np.sort(a, axis=None), np.sort(original, axis=None))  # a permutation
    batch = online[0:3]
    assert len(batch["image"]) == 3 and batch["label"] == [0, 1, 2]
    ds.set_transform(hf_batch_transform(None))  # set_transform: the same function, in place
    assert not np.array_equal(np.asarray(ds[2]["image"]), np.asarray(rows["image"][2]))


def test_hf_with_transform_keyed_needs_an_id_column():
    from visualmixer.core.keys import Key
    from visualmixer.data.hf import hf_batch_transform

    ds, _ = _hf_tiny()
    key = Key.from_seed(3)
    with pytest.raises(ValueError, match="no row indices: pass id_column=.*or key=None"):
        ds.with_transform(hf_batch_transform(key))[0]
    keyed = ds.with_transform(hf_batch_transform(key, id_column="name"))
    x, y = np.asarray(keyed[2]["image"]), np.asarray(keyed[2]["image"])
    assert np.array_equal(x, y)  # reproducible per id
    mapped = hf_batch_transform(key, id_column="name")(ds[2:3], [2])  # map gives the same image
    assert np.array_equal(np.asarray(mapped["image"][0]), x)


def test_obfuscate_hf_splits_transform_options_from_map_options():
    from visualmixer.core.keys import Key
    from visualmixer.data.hf import obfuscate_hf

    ds, _ = _hf_tiny()
    out = obfuscate_hf(ds, Key.from_seed(1), target_vfe=0.3, plan_column="plan", vfe_column=None,
                       batch_size=3, load_from_cache_file=False)
    assert "plan" in out.column_names and "vfe" not in out.column_names and out.num_rows == 4
