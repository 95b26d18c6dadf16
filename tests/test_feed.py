"""The background-thread prefetch of online training batches (train.feed.PrefetchedLoader)."""

import threading

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from visualmixer.train.feed import PrefetchedLoader


class _Numbers(Dataset):
    def __init__(self, n, fail_at=None):
        self.n, self.fail_at = n, fail_at

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail_at:
            raise RuntimeError(f"item {i} is broken")
        return torch.tensor([i])


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "visualmixer-prefetch"]


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_same_batches_in_the_same_order(depth):
    loader = DataLoader(_Numbers(23), batch_size=4)
    want = [b.tolist() for b in loader]
    feed = PrefetchedLoader(loader, torch.device("cpu"), depth)
    assert [b.tolist() for b in feed] == want
    assert [b.tolist() for b in feed] == want  # a second epoch
    assert feed.seconds > 0 and not _prefetch_threads()  # the waits are counted


def test_an_error_in_the_thread_is_raised_in_the_loop():
    feed = PrefetchedLoader(DataLoader(_Numbers(20, fail_at=9), batch_size=4), torch.device("cpu"), 2)
    seen = []
    with pytest.raises(RuntimeError, match="item 9 is broken"):
        for b in feed:
            seen.append(b)
    assert len(seen) == 2 and not _prefetch_threads()


def test_a_loop_that_stops_early_stops_the_thread():
    feed = PrefetchedLoader(DataLoader(_Numbers(1000), batch_size=1), torch.device("cpu"), 2)
    for i, _ in enumerate(feed):
        if i == 3:
            break
    assert not _prefetch_threads()


def test_default_depth_only_where_the_thread_has_room(monkeypatch):
    from visualmixer.train.feed import prefetch_depth

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert prefetch_depth(3, cpu) == 3 and prefetch_depth(0, cuda) == 0  # asked for: given
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert prefetch_depth(None, cpu) == 2
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)  # would oversubscribe the cores
    assert prefetch_depth(None, cpu) == 0 and prefetch_depth(None, cuda) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_on_cuda_the_thread_works_on_its_own_stream_and_gives_the_same_batches():
    from torch.utils.data import TensorDataset

    import visualmixer as vm
    from visualmixer.data.wrapper import ObfuscatedDataset
    from visualmixer.train.feed import DatasetBatches
    from visualmixer.train.fit import ShuffledBatches

    x = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8, device="cuda")
    ds = ObfuscatedDataset(TensorDataset(x, torch.arange(300, device="cuda")), vm.Key.from_seed(1), 0.5,
                           "online", return_vfe=True)
    batches = DatasetBatches(ds, ShuffledBatches(300, 64, epoch_seed=lambda e: e))
    want = [b[0].cpu() for b in batches]
    streams = []
    ds_batch = ds.batch

    def spy(indices):
        streams.append(torch.cuda.current_stream())
        return ds_batch(indices)

    ds.batch = spy
    got = [b[0].cpu() for b in PrefetchedLoader(batches, torch.device("cuda"), 2)]
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    assert streams and all(s != torch.cuda.default_stream() for s in streams)


@pytest.mark.parametrize("group", [2, 3])
def test_grouped_obfuscation_calls_give_the_same_batches(group):
    from torch.utils.data import TensorDataset

    import visualmixer as vm
    from visualmixer.data.wrapper import ObfuscatedDataset
    from visualmixer.train.feed import DatasetBatches, feed_group
    from visualmixer.train.fit import ShuffledBatches

    x = torch.randint(0, 256, (70, 1, 28, 28), dtype=torch.uint8)
    ds = ObfuscatedDataset(TensorDataset(x, torch.arange(70)), vm.Key.from_seed(1), 0.5, "online", return_vfe=True)
    ds.set_epoch(3)
    sampler = ShuffledBatches(70, 16, epoch_seed=lambda e: e)
    want = list(DatasetBatches(ds, sampler))
    got = list(DatasetBatches(ds, sampler, group=group))
    assert len(got) == len(want) == 5
    for a, b in zip(want, got, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert feed_group(128, torch.device("cuda")) == 4 and feed_group(128, torch.device("cpu")) == 1
    with pytest.raises(ValueError, match="group must be >= 1"):
        DatasetBatches(ds, sampler, group=0)


def test_grouped_batches_keep_the_collation_kind():
    from visualmixer.train.feed import DatasetBatches

    class _Rows:  # batch() as default collation gives it: one tensor, a list, or non-tensor fields
        def __init__(self, kind):
            self.kind, self.calls = kind, 0

        def batch(self, indices):
            self.calls += 1
            x = torch.tensor([int(i) for i in indices])
            names = [str(i) for i in x.tolist()]
            return {"tensor": x, "list": [x, x * 2], "names": (x, names), "dict": ({"a": x, "n": names}, x),
                    "opaque": (x, "one value for the batch")}[self.kind]

    sampler = [torch.arange(0, 4), torch.arange(4, 8), torch.arange(8, 10)]
    for kind in ("tensor", "list", "names", "dict", "opaque"):
        want = [_Rows(kind).batch(b) for b in sampler]
        rows = _Rows(kind)
        got = list(DatasetBatches(rows, sampler, group=2))
        assert len(got) == 3 and [type(g) for g in got] == [type(w) for w in want], kind
        # one call per group of two batches; only a field without a batch axis costs a call per batch
        assert rows.calls == (4 if kind == "opaque" else 2), kind  # opaque: joined, then 2 + 1
        for g, w in zip(got, want, strict=True):
            if kind == "tensor":
                assert torch.equal(g, w)
            elif kind == "dict":
                assert torch.equal(g[0]["a"], w[0]["a"]) and g[0]["n"] == w[0]["n"] and torch.equal(g[1], w[1])
            else:
                assert torch.equal(g[0], w[0]) and (torch.equal(g[1], w[1]) if kind == "list" else g[1] == w[1])


@pytest.mark.parametrize("workers", [0, 1])
def test_online_feed_keeps_the_saliency_weights_from_the_first_epoch(workers):
    """The online dataset behind the training feed caches each image's saliency weights (in
    process and from a loader worker): after one epoch every image's row is filled."""
    from types import SimpleNamespace

    import visualmixer as vm
    from visualmixer.data.imageset import ImageSet
    from visualmixer.train.config import TrainConfig
    from visualmixer.train.feed import training_feed

    x = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    y = torch.arange(40) % 10
    cfg = TrainConfig(data="fashion-mnist", mode="online", batch_size=16, loader_workers=workers, prefetch=0)
    data = SimpleNamespace(x_train=x, y_train=y, train_key=vm.Key.from_seed(3))
    feed, _ = training_feed(cfg, 0, data, ImageSet(x, y, tuple("abcdefghij"), "t"), torch.device("cpu"))
    try:
        feed.set_epoch(0)
        assert sum(len(b[0]) for b in feed) == 40
        assert int(feed.loader.dataset._weights.filled.sum()) == 40
    finally:
        if hasattr(feed, "close"):  # the worker processes
            feed.close()
