"""Training on obfuscated data: models, protocol (SPEC §7), determinism, resume, NaN, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import visualmixer as vm
from visualmixer.cli import main
from visualmixer.core import mixer
from visualmixer.data.datasets import ImageSet
from visualmixer.train import loop as L
from visualmixer.train import models as M
from visualmixer.train import quick_compare

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _synthetic(n: int, seed: int, size: int = 16, channels: int = 1) -> ImageSet:
    """4 classes: a bright quadrant (survives in-region shuffling as region means) + noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randint(0, 90, (n, channels, size, size), generator=g)
    h = size // 2
    for k in range(4):
        r, c = divmod(k, 2)
        x[y == k, :, r * h : (r + 1) * h, c * h : (c + 1) * h] += 150
    return ImageSet(x.clamp(0, 255).to(torch.uint8), y.long(), ("a", "b", "c", "d"), "synth")


@pytest.fixture(scope="module")
def sets():
    return _synthetic(192, 0), _synthetic(64, 1)


def _cfg(tmp_path, **kw) -> L.TrainConfig:
    base = dict(data="synthetic", model="cnn", target_vfe=0.5, mode="offline",
                optimizer="st-adam", epochs=2, batch_size=32, seeds=[0], out=str(tmp_path),
                progress=False)
    base.update(kw)
    return L.TrainConfig(**base)


def _strip(history):
    return [{k: v for k, v in h.items() if not k.endswith("_s")} for h in history]


@pytest.mark.parametrize("name", list(M.MODELS))
def test_models_forward_small_images(name):
    torch.manual_seed(0)
    for c, s in ((1, 28), (3, 16)):
        m = M.build_model(name, c, 7).eval()
        with torch.no_grad():
            assert m(torch.randn(2, c, s, s)).shape == (2, 7)


@pytest.mark.parametrize("name", ["region-sorted", "region-sorted-channels"])
@pytest.mark.parametrize("channels", [1, 3])
def test_region_sorted_model_is_blind_to_the_in_region_shuffle(channels, name):
    """The library's own obfuscation (spatial and channel shuffles inside 4-px regions) leaves
    the region-sorted models' output unchanged, bit for bit; the small CNN's changes."""
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (6, channels, 28, 28), dtype=torch.uint8, generator=g)
    shuffled = vm.obfuscate(x, key=vm.Key.from_seed(5), ids=range(6), target_vfe=0.9).images
    assert not torch.equal(shuffled, x)
    torch.manual_seed(0)
    sorted_net, cnn = M.build_model(name, channels, 10, region=4).eval(), M.SmallCNN(channels, 10).eval()
    with torch.no_grad():
        assert torch.equal(sorted_net(x.float() / 255), sorted_net(shuffled.float() / 255))
        assert not torch.equal(cnn(x.float() / 255), cnn(shuffled.float() / 255))


def test_canonical_channels_orders_channels_lexicographically_whatever_their_order():
    g = torch.Generator().manual_seed(0)
    values = torch.randint(0, 3, (400, 3, 4), generator=g).float().sort(dim=-1).values  # many ties
    canon = M.canonical_channels(values)
    for perm in ([0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]):
        assert torch.equal(M.canonical_channels(values[:, perm]), canon)
    rows = [[tuple(r) for r in block] for block in canon.tolist()]
    assert all(block == sorted(block) for block in rows)  # lexicographic, equal rows kept
    assert torch.equal(canon.sort(dim=1).values, values.sort(dim=1).values)  # the same values, moved whole rows


def test_region_sorted_channels_reads_each_channel_and_equals_pooled_on_grey():
    """Two colour regions with the same values pooled over the channels but not per channel: the
    pooled model cannot tell them apart, the per-channel one can; on grey images both are one model."""
    a = torch.zeros(1, 3, 4, 4)
    a[:, 1] = 1.0  # channel 0 all 0, channel 1 all 1, channel 2 all 0
    b = torch.zeros(1, 3, 4, 4)
    b[:, 0, :2], b[:, 1, 2:], b[:, 2, :, :] = 1.0, 1.0, 0.0  # channels 0 and 1 half 1: 16 ones pooled, as a
    torch.manual_seed(0)
    pooled = M.RegionSortedCNN(3, 10, region=4).eval()
    each = M.RegionSortedCNN(3, 10, region=4, channels="each").eval()
    each.load_state_dict(pooled.state_dict())
    with torch.no_grad():
        assert torch.equal(pooled.grid_features(a), pooled.grid_features(b))
        assert not torch.equal(each.grid_features(a), each.grid_features(b))
        grey = torch.rand(3, 1, 28, 28)
        g_pooled = M.RegionSortedCNN(1, 10, region=4).eval()
        g_each = M.RegionSortedCNN(1, 10, region=4, channels="each")
        g_each.load_state_dict(g_pooled.state_dict())
        assert torch.equal(g_pooled(grey), g_each.eval()(grey))
    with pytest.raises(ValueError, match="channels must be 'pooled' or 'each'"):
        M.RegionSortedCNN(3, 10, channels="rgb")


def test_shared_normaliser_for_models_blind_to_the_channel_order(tmp_path):
    """One mean and std for all channels where the model (or its teacher) is region-sorted-channels,
    per channel otherwise; grey images are normalised the same either way."""
    from visualmixer.train.fit import channel_normaliser

    x = torch.stack([torch.full((2, 4, 4), v) for v in (10, 100, 200)], 1).to(torch.uint8)  # (2, 3, 4, 4)
    per, _ = channel_normaliser(x)
    shared, shared_std = channel_normaliser(x, shared=True)
    assert per.flatten().tolist() != shared.flatten().tolist()
    assert shared.shape == (1, 3, 1, 1) and len(set(shared.flatten().tolist())) == 1
    assert shared_std.shape == (1, 3, 1, 1)
    grey = x[:, :1]
    pairs = zip(channel_normaliser(grey), channel_normaliser(grey, shared=True), strict=True)
    assert all(torch.equal(p, q) for p, q in pairs)
    colour = (_synthetic(64, 0, channels=3), _synthetic(32, 1, channels=3))
    for model, is_shared in (("region-sorted-channels", True), ("region-sorted", False)):
        cfg = _cfg(tmp_path / model, model=model, target_vfe=None, epochs=1).validate()
        data = L._prepare_data(cfg, 0, tmp_path, *colour, torch.device("cpu"))
        assert (len(set(data.mean.flatten().tolist())) == 1) == is_shared


def test_region_sorted_model_sizes_and_errors():
    net = M.RegionSortedCNN(1, 10, region=4).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 1, 30, 30)).shape == (2, 10)  # the 2-px remainder is dropped
        with pytest.raises(ValueError, match="smaller than one 4-px region"):
            net(torch.rand(1, 1, 3, 28))
    with pytest.raises(ValueError, match="region must be a positive int"):
        M.RegionSortedCNN(1, 10, region=0)


@pytest.mark.parametrize("region", [None, 2])
def test_train_builds_the_region_sorted_model_on_the_protections_grid(tmp_path, sets, region):
    """The loop gives the model the region of the protection (``--region``, else the size's default)."""
    cfg = _cfg(tmp_path, model="region-sorted", mix=2, region=region, epochs=1, optimizer="adam")
    run = L.train(cfg, sets=sets)["runs"][0]
    assert run["final_test_acc"] > 0.25
    weight = torch.load(tmp_path / "seed0" / "checkpoint.pt", weights_only=False)["model"]["grid.0.weight"]
    assert weight.shape[1] == (region or 4) ** 2  # one grey channel, region² sorted values


def test_build_model_rejects_unknown():
    with pytest.raises(ValueError, match="valid: cnn, resnet18, shufflenet, region-sorted, region-sorted-channels"):
        M.build_model("vgg", 3, 10)
    with pytest.raises(ValueError, match="in_channels"):
        M.build_model("cnn", 2, 10)


def test_offline_run_writes_outputs_and_learns(tmp_path, sets):
    metrics = L.train(_cfg(tmp_path, epochs=3, optimizer="adam", lr=3e-3), sets=sets)
    run = metrics["runs"][0]
    assert [h["epoch"] for h in run["history"]] == [1, 2, 3]
    assert run["final_test_acc"] >= 0.6  # chance is 0.25
    assert run["train_vfe"] >= 0.5 and run["test_vfe"] >= 0.5  # the target is reached
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "curves.png").is_file()
    assert (tmp_path / "seed0" / "checkpoint.pt").is_file()
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["summary"]["final_test_acc"]["n"] == 1
    assert on_disk["config"]["optimizer"] == "adam"
    assert Image.open(tmp_path / "curves.png").size[0] > 100
    per_seed = json.loads((tmp_path / "seed0" / "history.json").read_text())
    assert per_seed["history"] == on_disk["runs"][0]["history"]
    assert len(per_seed["step_losses"]) == 3 * (192 // 32)  # every step of the 3 epochs
    assert "step_losses" not in on_disk["runs"][0]


@pytest.mark.parametrize("how", [{"loader_workers": 2}, {"prefetch": 3}])
def test_online_batches_made_elsewhere_give_the_same_run(tmp_path, sets, how):
    """Obfuscating in worker processes, or ahead in a background thread, changes where and when
    the work runs, not a single number."""
    kw = dict(mode="online", optimizer="adam", epochs=2)
    here = L.train(_cfg(tmp_path / "here", prefetch=0, **kw), sets=sets)
    other = L.train(_cfg(tmp_path / "other", **how, **kw), sets=sets)
    assert all(other["config"][k] == v for k, v in how.items())
    assert _strip(other["runs"][0]["history"]) == _strip(here["runs"][0]["history"])
    a = torch.load(tmp_path / "here" / "seed0" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "other" / "seed0" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_channels_last_trains_the_same_model_up_to_rounding(tmp_path, sets):
    """--channels-last changes the weights' memory layout (a faster CPU step), not the training:
    the same losses and weights up to rounding, the layout kept in the checkpoint, and a run
    resumed in the other layout."""
    kw = dict(optimizer="adam", epochs=2, mode="online")
    plain = L.train(_cfg(tmp_path / "plain", **kw), sets=sets)
    cl = L.train(_cfg(tmp_path / "cl", channels_last=True, **kw), sets=sets)
    assert cl["config"]["channels_last"] is True and plain["config"]["channels_last"] is False
    a = torch.load(tmp_path / "plain" / "seed0" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cl" / "seed0" / "checkpoint.pt", weights_only=False)["model"]
    deep = [k for k in a if a[k].ndim == 4 and a[k].shape[1] > 1]  # (one input channel: both layouts)
    assert deep and all(a[k].is_contiguous() and not b[k].is_contiguous() for k in deep)
    assert all(b[k].is_contiguous(memory_format=torch.channels_last) for k in deep)
    # another summation order (and, on other CPUs, other kernels): close, not equal
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-2, atol=1e-2)
    for h, g in zip(plain["runs"][0]["history"], cl["runs"][0]["history"], strict=True):
        assert g["train_loss"] == pytest.approx(h["train_loss"], rel=1e-2)
    more = L.train(_cfg(tmp_path / "cl", channels_last=False, resume=True, **dict(kw, epochs=3)), sets=sets)
    assert len(more["runs"][0]["history"]) == 3


@pytest.mark.parametrize("name", ["loader_workers", "prefetch"])
def test_negative_loader_settings_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match=f"{name}=-1 is not allowed"):
        _cfg(tmp_path, **{name: -1}).validate()


def test_protocol_ids_and_keys(tmp_path, sets, monkeypatch):
    calls = []
    real = vm.obfuscate

    def spy(images, **kw):
        calls.append((images.shape[0], kw.get("key"), kw.get("ids"), kw.get("target_vfe")))
        return real(images, **kw)

    monkeypatch.setattr(mixer, "obfuscate", spy)  # the library imports it from its home module
    L.train(_cfg(tmp_path / "on", mode="online", target_vfe=0.4), sets=sets)
    train_key = vm.Key.from_seed(0)
    test_calls = [c for c in calls if c[2] and c[2][0] == ("test", 0)]
    assert len(test_calls) == 1 and test_calls[0][0] == 64
    assert test_calls[0][1] is not None and test_calls[0][1] != train_key  # independent key
    online = [c for c in calls if c[2] and isinstance(c[2][0], tuple) and c[2][0][0] != "test"]
    assert all(c[1] == train_key and c[3] == 0.4 for c in online)
    epochs = {i[1] for c in online for i in c[2]}
    assert epochs == {0, 1}  # ids (index, epoch): a new shuffle every epoch
    seen = sorted(i[0] for c in online for i in c[2] if i[1] == 0)
    assert seen == list(range(192))

    calls.clear()
    L.train(_cfg(tmp_path / "off", epochs=1), sets=sets)
    train_calls = [c for c in calls if c[2] and c[2][0] == 0]
    assert len(train_calls) == 1 and list(train_calls[0][2]) == list(range(192))

    calls.clear()
    L.train(_cfg(tmp_path / "clean", target_vfe=None, epochs=1), sets=sets)
    assert calls == []  # the clean baseline never obfuscates

    calls.clear()
    L.train(_cfg(tmp_path / "secret", epochs=1, secret_keys=True), sets=sets)
    assert any(c[1] is None and c[0] == 64 for c in calls)  # test: fresh randomness
    key_file = tmp_path / "secret" / "seed0" / "key"
    assert key_file.is_file() and (key_file.stat().st_mode & 0o077) == 0


def test_deterministic_for_a_seed_on_cpu(tmp_path, sets):
    a = L.train(_cfg(tmp_path / "a", mode="online"), sets=sets)
    b = L.train(_cfg(tmp_path / "b", mode="online"), sets=sets)
    assert _strip(a["runs"][0]["history"]) == _strip(b["runs"][0]["history"])
    wa = torch.load(tmp_path / "a" / "seed0" / "checkpoint.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "b" / "seed0" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = L.train(_cfg(tmp_path / "c", mode="online", seeds=[1]), sets=sets)
    assert _strip(c["runs"][0]["history"]) != _strip(a["runs"][0]["history"])


def test_resume_equals_uninterrupted(tmp_path, sets):
    full = L.train(_cfg(tmp_path / "full", epochs=2), sets=sets)
    L.train(_cfg(tmp_path / "part", epochs=1), sets=sets)
    with pytest.raises(FileExistsError, match="--resume"):
        L.train(_cfg(tmp_path / "part", epochs=2), sets=sets)
    with pytest.raises(ValueError, match="target_vfe"):
        L.train(_cfg(tmp_path / "part", epochs=2, resume=True, target_vfe=0.7), sets=sets)
    resumed = L.train(_cfg(tmp_path / "part", epochs=2, resume=True), sets=sets)
    assert _strip(resumed["runs"][0]["history"]) == _strip(full["runs"][0]["history"])
    # another seed into a finished run's out (no seed of its own there yet) is refused too: it would
    # replace the run's metrics.json and leave two runs in one folder
    with pytest.raises(FileExistsError, match=r"metrics.json exists: out=.* holds a run; pass resume=True"):
        L.train(_cfg(tmp_path / "part", epochs=2, seeds=[5], model="region-sorted"), sets=sets)


class _NaNAfter(torch.nn.Module):
    """A small model whose output turns NaN after ``n`` training forward passes."""

    def __init__(self, in_channels, num_classes, region=4, n=8):
        super().__init__()
        self.net = M.SmallCNN(in_channels, num_classes)
        self.n = n
        self.calls = 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls > self.n:
                out = out * float("nan")
        return out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, sets, monkeypatch):
    monkeypatch.setitem(M.MODELS, "nan-after-8", _NaNAfter)  # 6 steps per epoch here
    cfg = _cfg(tmp_path, model="nan-after-8", epochs=3, batch_size=32)
    with pytest.raises(L.TrainingDiverged, match=r"epoch 2, step 3.*Last good checkpoint"):
        L.train(cfg, sets=sets)
    ckpt = torch.load(tmp_path / "seed0" / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 0 and len(ckpt["history"]) == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_config_validation():
    with pytest.raises(ValueError, match="valid: st-adam, adam, sgd"):
        L.TrainConfig(optimizer="lamb").validate()
    with pytest.raises(ValueError, match="valid: offline, online"):
        L.TrainConfig(mode="both").validate()
    with pytest.raises(ValueError, match="target_vfe"):
        L.TrainConfig(target_vfe=1.5).validate()
    assert L.TrainConfig(optimizer="sgd").validate().lr == 0.05


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_requested_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        L.resolve_device("cuda")


@pytest.fixture
def tiny_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for k, c in enumerate(("dark", "light")):
        (root / c).mkdir(parents=True)
        for i in range(20):
            arr = rng.integers(0, 120, (16, 16, 3), dtype=np.uint8) + 120 * k
            Image.fromarray(arr.astype(np.uint8)).save(root / c / f"{i}.png")
    return root


def test_cli_train_end_to_end(tmp_path, tiny_folder, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data", f"imagefolder:{tiny_folder}", "--epochs", "1", "--seeds", "0",
               "1", "--target-vfe", "0.5", "--mode", "online", "--batch-size", "8",
               "--no-progress", "--out", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["test_acc_per_seed"]) == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["final_test_acc"]["n"] == 2
    assert metrics["config"]["mode"] == "online"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "mnist"], "valid: fashion-mnist, photos"),
        (["--model", "vgg"], "valid: cnn, resnet18, shufflenet"),
        (["--optimizer", "lamb"], "valid: st-adam, adam, sgd"),
    ],
)
def test_cli_bad_names_list_valid_ones(tmp_path, argv, message, capsys):
    rc = main(["train", *argv, "--out", str(tmp_path / "x"), "--no-progress", "--epochs", "1"])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_cli_bad_target_and_cuda(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--target-vfe", "2"])
    assert "target VFE" in capsys.readouterr().err
    if not torch.cuda.is_available():
        rc = main(["train", "--device", "cuda", "--out", str(tmp_path / "x")])
        assert rc == 2 and "CUDA is not available" in capsys.readouterr().err


def test_quick_compare_writes_table(tmp_path, tiny_folder):
    res = quick_compare(tmp_path / "qc", targets=(None, 0.5), epochs=1,
                        data=f"imagefolder:{tiny_folder}", train_size=None, test_size=None)
    rows = res["rows"]
    assert [r["target_vfe"] for r in rows] == [None, 0.5]
    assert rows[0]["loss_pp"] == 0.0 and rows[1]["loss_pp"] is not None
    table = (tmp_path / "qc" / "accuracy.md").read_text()
    assert "| none (clean) |" in table and "| 0.5 |" in table
    assert (tmp_path / "qc" / "curves.png").is_file()
    assert (tmp_path / "qc" / "accuracy.json").is_file()
    # a second call into the same directory starts afresh (no stale checkpoints, no error)
    again = quick_compare(tmp_path / "qc", targets=(0.5,), epochs=2,
                          data=f"imagefolder:{tiny_folder}", train_size=20, test_size=None)
    assert len(again["rows"]) == 1 and again["rows"][0]["loss_pp"] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_obfuscates_like_cpu(sets, tmp_path):
    """On the GPU the offline sets are the CPU's bytes, and both modes train to finite losses."""
    tr, _ = sets
    key = vm.Key.from_seed(0)
    cpu, v_cpu = L.obfuscate_set(tr.images, 0.5, key=key, ids=range(len(tr)), batch=50)
    gpu, v_gpu = L.obfuscate_set(tr.images.cuda(), 0.5, key=key, ids=range(len(tr)), batch=50)
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)
    torch.testing.assert_close(v_gpu, v_cpu)
    for mode in L.MODES:
        m = L.train(_cfg(tmp_path / mode, mode=mode, device="cuda"), sets=sets)
        h = m["runs"][0]["history"]
        assert len(h) == 2 and all(np.isfinite(e["train_loss"]) for e in h)
        assert m["runs"][0]["train_vfe"] > 0.3


def test_cosine_lr_schedule_resumes_on_its_curve(tmp_path, sets):
    full = L.train(_cfg(tmp_path / "full", epochs=2, lr_schedule="cosine"), sets=sets)
    constant = L.train(_cfg(tmp_path / "constant", epochs=2), sets=sets)
    assert _strip(full["runs"][0]["history"])[1] != _strip(constant["runs"][0]["history"])[1]
    L.train(_cfg(tmp_path / "part", epochs=1, lr_schedule="cosine"), sets=sets)
    with pytest.raises(ValueError, match="lr_schedule"):
        L.train(_cfg(tmp_path / "part", epochs=2, resume=True), sets=sets)
    resumed = L.train(_cfg(tmp_path / "part", epochs=2, resume=True, lr_schedule="cosine"), sets=sets)
    assert _strip(resumed["runs"][0]["history"]) == _strip(full["runs"][0]["history"])
    saved = torch.load(tmp_path / "full" / "seed0" / "checkpoint.pt", weights_only=False)
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.5 * full["config"]["lr"])
    assert full["config"]["lr_schedule"] == "cosine"


def test_cli_lr_schedule(tmp_path, tiny_folder, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data", f"imagefolder:{tiny_folder}", "--epochs", "1", "--batch-size", "8",
               "--lr-schedule", "cosine", "--no-progress", "--out", str(out)])
    assert rc == 0 and json.loads((out / "metrics.json").read_text())["config"]["lr_schedule"] == "cosine"
    capsys.readouterr()
    rc = main(["train", "--lr-schedule", "step", "--out", str(tmp_path / "x"), "--no-progress", "--epochs", "1"])
    assert rc == 2 and "--lr-schedule step is not known; valid: constant, cosine" in capsys.readouterr().err
