"""CUDA graphs of obfuscate/restore (core.graphs): the cache and replay logic on the CPU with a
stand-in recorder, and the real thing on CUDA (run by scripts/gpu_session.sh)."""

from __future__ import annotations

import warnings

import pytest
import torch

import visualmixer as vm
from visualmixer.core import graphs, keyed
from visualmixer.data.samples import builtin_photos

KEY = vm.Key.from_seed(5)


def _photos(size: int, n: int) -> torch.Tensor:
    _, x = builtin_photos(size)
    return x.repeat(-(-n // len(x)), 1, 1, 1)[:n].contiguous()


class _StandInGraph:
    """Replays by calling ``fn`` on the static inputs and writing into the static outputs, as a
    CUDA graph writes into the memory it recorded."""

    def __init__(self, fn, static):
        self.fn, self.static, self.replays = fn, static, 0

    def replay(self):
        self.replays += 1
        for out, new in zip(self.outputs, self.fn(*self.static), strict=True):
            out.copy_(new)


@pytest.fixture
def stand_in(monkeypatch):
    """Graphs on the CPU: ``applies`` everywhere, the sync-free path, a stand-in recorder."""
    recorded = []

    def record(fn, static):
        graph = _StandInGraph(fn, static)
        graph.outputs = tuple(torch.empty_like(t) for t in fn(*static))  # recorded, not run: garbage
        graph.outputs[0].fill_(0)
        recorded.append(graph)
        return graph, graph.outputs

    monkeypatch.setattr(keyed, "_FORCE_SYNC_FREE", True)
    monkeypatch.setattr(graphs, "applies", lambda t: True)
    monkeypatch.setattr(graphs, "_warm_up", lambda fn, static: fn(*static))
    monkeypatch.setattr(graphs, "_record", record)
    monkeypatch.setattr(graphs, "CAPTURE_ON_CALL", 1)
    graphs.clear()
    yield recorded
    graphs.clear()


def _eager(monkeypatch, fn):
    with monkeypatch.context() as m:
        m.setattr(graphs, "applies", lambda t: False)
        return fn()


def test_graph_replays_give_each_call_its_own_eager_result(stand_in, monkeypatch):
    x = _photos(32, 12)
    calls = [(x[:6], range(6)), (x[6:], range(6, 12)), (x[:6].flip(0), range(20, 26))]
    results = [vm.obfuscate(images, key=KEY, ids=ids) for images, ids in calls]
    assert len(stand_in) == 1 and stand_in[0].replays == 3  # one capture, replayed per call
    for (images, ids), got in zip(calls, results, strict=True):
        want = _eager(monkeypatch, lambda images=images, ids=ids: vm.obfuscate(images, key=KEY, ids=ids))
        assert torch.equal(got.images, want.images) and torch.equal(got.plans.levels, want.plans.levels)
        assert torch.equal(got.vfe, want.vfe)
        back = vm.restore(got.images, got.plans, key=KEY, ids=ids)
        assert torch.equal(back, images)
    # outputs are copies: a later replay does not change an earlier result
    assert not torch.equal(results[0].images, results[1].images)
    assert len(stand_in) == 2  # restore: one more graph, for its own signature


def test_a_combination_is_captured_on_its_second_call(stand_in, monkeypatch):
    monkeypatch.setattr(graphs, "CAPTURE_ON_CALL", 2)
    x = _photos(32, 4)
    first = vm.obfuscate(x, key=KEY, ids=range(4))  # eager: a one-off call holds no graph
    assert not stand_in
    second = vm.obfuscate(x, key=KEY, ids=range(4))
    assert len(stand_in) == 1 and torch.equal(first.images, second.images)


def test_a_new_shape_or_option_is_a_new_graph_and_old_ones_are_dropped(stand_in, monkeypatch):
    monkeypatch.setattr(graphs, "MAX_GRAPHS", 2)
    x = _photos(32, 8)
    vm.obfuscate(x, key=KEY, ids=range(8))
    vm.obfuscate(x[:5], key=KEY, ids=range(5))
    vm.obfuscate(x[:5], key=KEY, ids=range(5), target_vfe=0.3)
    assert len(stand_in) == 3 and len(graphs._graphs) == 2
    vm.obfuscate(x, key=KEY, ids=range(8))  # dropped: captured again
    assert len(stand_in) == 4


def test_weights_made_beforehand_are_graph_inputs(stand_in, monkeypatch):
    """``saliency=SaliencyWeights`` records a graph of its own whose inputs include the weights:
    each replay uses the call's weights (the eager bytes), not the captured ones."""
    x = _photos(32, 8)
    w = vm.saliency_weights(x)
    calls = [(x[:4], w[:4]), (x[4:], w[4:])]
    got = [vm.obfuscate(images, key=KEY, ids=range(4), saliency=weights) for images, weights in calls]
    assert len(stand_in) == 1 and stand_in[0].replays == 2 and len(stand_in[0].static) == 4
    for (images, _), res in zip(calls, got, strict=True):
        want = _eager(monkeypatch, lambda images=images: vm.obfuscate(images, key=KEY, ids=range(4)))
        assert torch.equal(res.images, want.images) and torch.equal(res.vfe, want.vfe)


def test_only_the_sync_free_one_pass_path_is_recorded(stand_in):
    x = _photos(32, 4)
    for kw in ({"region": 8}, {"saliency": lambda images: torch.ones(images.shape[0], *images.shape[2:])}):
        vm.obfuscate(x, key=KEY, ids=range(4), **kw)  # windows are not the regions; a caller's map
    vm.obfuscate(x[..., :30, :30], key=KEY, ids=range(4))  # edge regions
    assert not stand_in
    vm.obfuscate(x, key=KEY, ids=range(4))
    assert len(stand_in) == 1


def test_a_failed_capture_warns_once_and_runs_eagerly(stand_in, monkeypatch):
    def fail(fn, static):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "_record", fail)
    x = _photos(32, 4)
    with pytest.warns(RuntimeWarning, match="could not capture obfuscate"):
        a = vm.obfuscate(x, key=KEY, ids=range(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, no second capture
        b = vm.obfuscate(x, key=KEY, ids=range(4))
    assert not graphs._graphs
    want = _eager(monkeypatch, lambda: vm.obfuscate(x, key=KEY, ids=range(4)))
    assert torch.equal(a.images, want.images) and torch.equal(b.images, want.images)


def test_errors_of_the_call_itself_are_raised_not_hidden(stand_in, monkeypatch):
    def boom(*args):
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        graphs.run("f", None, boom, torch.zeros(2))


def test_graphs_apply_only_to_cuda_and_can_be_switched_off(monkeypatch):
    cpu = torch.zeros(2)
    assert not graphs.applies(cpu)
    fake_cuda = type("T", (), {"device": torch.device("cuda"), "requires_grad": False})()
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert graphs.applies(fake_cuda)
    fake_cuda.requires_grad = True  # a graph records no autograd history
    assert not graphs.applies(fake_cuda)
    previous = graphs.set_enabled(False)
    try:
        assert graphs.set_enabled(False) is False
    finally:
        graphs.set_enabled(previous)
    with pytest.raises(TypeError, match="enabled must be a bool"):
        graphs.set_enabled(1)


# -- on a GPU (run by scripts/gpu_session.sh; skipped here without one) ------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@cuda
@pytest.mark.parametrize("size", [224, 32])
def test_cuda_graphs_give_the_eager_bytes(size, monkeypatch):
    monkeypatch.setattr(graphs, "CAPTURE_ON_CALL", 1)
    graphs.clear()
    x = _photos(size, 16).cuda()
    halves = ((0, 8), (8, 16))
    previous = graphs.set_enabled(False)
    try:
        eager = [vm.obfuscate(x[a:b], key=KEY, ids=range(a, b)) for a, b in halves]
        graphs.set_enabled(True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a failed capture fails the test
            got = [vm.obfuscate(x[a:b], key=KEY, ids=range(a, b)) for a, b in halves]
            back = [vm.restore(g.images, g.plans, key=KEY, ids=range(a, b))
                    for g, (a, b) in zip(got, halves, strict=True)]
    finally:
        graphs.set_enabled(previous)
    assert len(graphs._graphs) == 2 and all(g is not None for g in graphs._graphs.values())
    for e, g in zip(eager, got, strict=True):
        assert torch.equal(e.images, g.images) and torch.equal(e.plans.levels, g.plans.levels)
        assert torch.equal(e.vfe, g.vfe)
    assert torch.equal(torch.cat(back), x)


@cuda
def test_cuda_graph_replay_has_no_host_synchronisation(monkeypatch):
    monkeypatch.setattr(graphs, "CAPTURE_ON_CALL", 1)
    graphs.clear()
    x = _photos(224, 16).cuda()
    words = keyed.key_words(KEY.subkeys(range(16), "shuffle"), "cuda")
    res = vm.obfuscate(x, key=KEY, ids=range(16))  # captures
    levels = res.plans.levels.cuda().to(torch.int64).view(16, -1)
    vm.restore(res.images, res.plans, key=KEY, ids=range(16))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        assert len(graphs._graphs) == 2
        for signature, entry in graphs._graphs.items():
            graphs._replay(entry, (x, words) if signature[0] == "obfuscate" else (res.images, words, levels))
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_inference_mode_has_a_graph_of_its_own(stand_in):
    x = _photos(32, 4)
    with torch.inference_mode():
        a = vm.obfuscate(x, key=KEY, ids=range(4))
    b = vm.obfuscate(x, key=KEY, ids=range(4))  # its own graph: inference tensors are read-only outside
    assert len(stand_in) == 2 and torch.equal(a.images, b.images)
