"""``visualmixer train``'s edges: options that crashed late, were ignored or spoiled a resume."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from PIL import Image

from visualmixer.cli import main
from visualmixer.data.datasets import ImageSet, load_dataset
from visualmixer.data.filesets import load_image_folder
from visualmixer.tools.errors import DestinationBusy
from visualmixer.tools.lock import RunLock
from visualmixer.train import loop as L
from visualmixer.train.config import TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _set(n: int, seed: int, size: int = 16) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randint(0, 90, (n, 1, size, size), generator=g)
    x[y == 1, :, : size // 2] += 150
    return ImageSet(x.clamp(0, 255).to(torch.uint8), y.long(), ("a", "b"), "synth")


@pytest.fixture(scope="module")
def sets():
    return _set(64, 0), _set(32, 1)


def _cfg(out, **kw) -> TrainConfig:
    base = dict(data="synthetic", model="cnn", target_vfe=None, epochs=2, batch_size=32, seeds=[0], out=str(out),
                progress=False)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("kwargs, match", [
    ({"seeds": [0, 0]}, r"seeds: give at least one seed, each once \(got \[0, 0\]\)"),
    ({"seeds": []}, "seeds: give at least one seed"),
    ({"seeds": "012"}, "seeds must be a list of ints"),
    ({"seeds": 5}, "seeds must be a list of ints"),
    ({"seeds": [0.7]}, "seeds=0.7 is not allowed"),
    ({"epochs": 2.7}, "epochs=2.7 is not allowed"),
    ({"batch_size": "8"}, "batch_size='8' is not allowed"),
    ({"target_vfe": "0.5"}, "target_vfe='0.5' is not allowed"),
    ({"target_vfe": math.nan}, "target_vfe=nan is not allowed"),
    ({"lr": "0.1"}, "lr='0.1' is not allowed: give a finite number > 0"),
    ({"lr": 0}, "lr=0 is not allowed"),
    ({"weight_decay": -1}, "weight_decay=-1 is not allowed: give a finite number >= 0"),
    ({"lr": math.inf}, "lr=inf is not allowed: give a finite number > 0"),
    ({"weight_decay": math.inf}, "weight_decay=inf is not allowed: give a finite number >= 0"),
    ({"soft_label_temperature": math.inf}, "soft_label_temperature=inf is not allowed"),
    ({"momentum": 1.0}, r"momentum=1.0 is not allowed: give a number in \[0, 1\)"),
    ({"augment": "hflip"}, "augment must be a list of names"),
    ({"target_acc": 5}, "target_acc=5 is not allowed"),
    ({"target_acc": math.nan}, "target_acc=nan is not allowed"),
    ({"image_size": 0}, "image_size=0 is not allowed"),
    ({"train_size": -3}, "train_size=-3 is not allowed"),
    ({"device": "gpu"}, "device='gpu' is not a device name"),
    ({"device": "cuda:x"}, "device='cuda:x' is not a device name"),
    ({"mode": "online", "target_vfe": None}, "mode='online' .* needs target_vfe=T"),
    ({"target_vfe": 0.5, "prefetch": 2}, "prefetch=2 makes online batches: it needs mode='online'"),
    ({"target_vfe": 0.5, "loader_workers": 1}, "loader_workers=1 makes online batches"),
    ({"target_vfe": 0.5, "mode": "online", "loader_workers": 1, "prefetch": 2}, "the workers make the batches"),
    ({"target_vfe": 0.5, "mode": "online", "mix": 2, "prefetch": 2}, "does not apply to mix"),
])
def test_bad_options_are_refused_naming_the_parameter(tmp_path, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _cfg(tmp_path, **kwargs).validate()


def test_config_is_keyword_only_and_numbers_are_stored_as_numbers(tmp_path):
    with pytest.raises(TypeError):
        TrainConfig("fashion-mnist", "cnn", 0.7)
    cfg = _cfg(tmp_path, seeds=(2, 1), epochs=3.0, target_vfe=1, lr=1, image_size=8.0).validate()
    assert (cfg.seeds, cfg.epochs, cfg.target_vfe, cfg.lr, cfg.image_size) == ([2, 1], 3, 1.0, 1.0, 8)
    assert [type(v) for v in (cfg.epochs, cfg.target_vfe, cfg.lr, cfg.image_size)] == [int, float, float, int]


def test_resume_refuses_fewer_epochs_than_done(tmp_path, sets):
    L.train(_cfg(tmp_path, epochs=2), sets=sets)
    with pytest.raises(ValueError, match="it has 2 epochs done, more than epochs=1"):
        L.train(_cfg(tmp_path, epochs=1, resume=True), sets=sets)
    more = L.train(_cfg(tmp_path, epochs=3, resume=True), sets=sets)  # a constant schedule extends
    assert [h["epoch"] for h in more["runs"][0]["history"]] == [1, 2, 3]


def test_resume_refuses_a_cosine_schedule_of_another_length(tmp_path, sets):
    L.train(_cfg(tmp_path, epochs=2, lr_schedule="cosine"), sets=sets)
    with pytest.raises(ValueError, match="ran over epochs=2, and over epochs=4 its epochs done would have"):
        L.train(_cfg(tmp_path, epochs=4, resume=True, lr_schedule="cosine"), sets=sets)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", "foreign"])
def test_a_damaged_checkpoint_is_named_not_a_traceback(tmp_path, sets, content):
    ckpt = tmp_path / "seed0" / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True)
    if content == "foreign":
        torch.save({"weights": torch.zeros(2)}, ckpt)
    else:
        ckpt.write_bytes(content)
    with pytest.raises(ValueError, match=f"cannot resume {ckpt}: not a readable checkpoint"):
        L.train(_cfg(tmp_path, resume=True), sets=sets)


def test_a_second_run_into_the_same_out_is_refused(tmp_path, sets):
    with RunLock.for_destination(tmp_path, command="train"):  # as a run in another process holds it
        with pytest.raises(DestinationBusy, match="only one run per destination"):
            L.train(_cfg(tmp_path), sets=sets)
    assert not (tmp_path / "metrics.json").exists()
    done = threading.Event()
    threading.Thread(target=lambda: (L.train(_cfg(tmp_path, epochs=1), sets=sets), done.set())).start()
    assert done.wait(120) and (tmp_path / "metrics.json").exists()  # free again once the holder is gone


def test_out_that_is_a_file_is_refused(tmp_path, sets):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="out='.*afile' is a file"):
        L.train(_cfg(tmp_path / "afile"), sets=sets)


def test_images_too_small_for_the_model_are_refused_before_training(tmp_path):
    tiny = (_set(8, 0, size=3), _set(4, 1, size=3))
    with pytest.raises(ValueError, match="model='cnn' needs images of at least 4 x 4 pixels, got 3 x 3"):
        L.train(_cfg(tmp_path), sets=tiny)


def test_unreadable_images_in_a_folder_are_named(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"1 image\(s\) in .* cannot be read: .*broken\.png"):
        load_image_folder(tmp_path, "train", test_fraction=0.0)


def test_image_size_for_a_set_of_fixed_size_is_refused():
    with pytest.raises(ValueError, match="size=8 applies to 'photos'"):
        load_dataset("fashion-mnist", "train", size=8)


def test_cli_names_flags(tmp_path, capsys):
    rc = main(["train", "--seeds", "0", "0", "--out", str(tmp_path / "x"), "--no-progress"])
    assert rc == 2 and "--seeds: give at least one seed, each once" in capsys.readouterr().err
    rc = main(["train", "--device", "gpu", "--out", str(tmp_path / "y"), "--no-progress"])
    assert rc == 2 and "--device gpu is not a device name" in capsys.readouterr().err


def test_distill_reports_a_diverged_run_and_refuses_nan_temperature(tmp_path, capsys, monkeypatch):
    from visualmixer.train import distill
    from visualmixer.train.fit import TrainingDiverged

    rc = main(["distill", "--temperature", "nan", "--out", str(tmp_path)])
    assert rc == 2 and "--temperature nan is not allowed" in capsys.readouterr().err

    def diverge(cfg):
        raise TrainingDiverged("training loss became nan")

    monkeypatch.setattr(distill, "run_distill", diverge)
    rc = main(["distill", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 3 and "error: training loss became nan (try a smaller --lr)" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, says", [
    (["train", "--lr", "inf"], "error: --lr inf is not allowed: give a finite number > 0"),
    (["train", "--lr", "nan"], "error: --lr nan is not allowed: give a finite number > 0"),
    (["train", "--weight-decay", "inf"], "error: --weight-decay inf is not allowed: give a finite number >= 0"),
    (["train", "--target-acc", "nan"], "error: --target-acc nan is not allowed: give a number in [0, 1]"),
    (["train", "--soft-label-temperature", "nan"], "error: --soft-label-temperature nan is not allowed"),
    (["soft-labels", "SRC", "DST", "--lr", "inf"], "argument --lr: expected a finite number > 0, got 'inf'"),
    (["distill", "--lr", "-1"], "argument --lr: expected a finite number > 0, got '-1'"),
    (["distill", "--lr", "inf"], "argument --lr: expected a finite number > 0, got 'inf'"),
    (["distill", "--seeds", "-1"], "argument --seeds: expected an integer >= 0, got -1"),
    (["distill", "--seeds", "0", "0"], "error: --seeds: give at least one seed, each once (got [0, 0])"),
    (["train", "--seeds", "200000000000000"], "error: --seeds 200000000000000 is not allowed: give seeds from 0 to "
     "4294967295"),
    (["fl", "--seed", "-1"], "argument --seed: expected a seed from 0 to 4294967295, got -1"),
    (["soft-labels", "SRC", "DST", "--seed", "4294967296"], "argument --seed: expected a seed from 0 to 4294967295"),
])
def test_rates_must_be_finite_and_seeds_distinct_in_every_command(argv, says, tmp_path, capsys, monkeypatch):
    """train, soft-labels and distill share one check of a learning rate and of the seeds: usage
    errors (exit 2) naming the flag, before any data is read."""
    from visualmixer.train import distill

    def never(*a, **k):
        raise AssertionError("the run started")

    monkeypatch.setattr(distill, "run_distill", never)
    monkeypatch.setattr(L, "load_sets", never)
    out = [] if argv[0] == "soft-labels" else ["--out", str(tmp_path / "o")]
    try:
        rc = main([*argv, *out])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and says in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("given", [[], ["--resume"]])
def test_an_interrupted_run_says_how_to_continue(tmp_path, capsys, monkeypatch, given):
    def interrupt(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(L, "train", interrupt)
    argv = ["train", "--epochs", "2", "--out", str(tmp_path), "--no-progress", *given]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert f"continue with: visualmixer train --epochs 2 --out {tmp_path} --no-progress --resume\n" in err
