"""Soft labels released as a file (`visualmixer soft-labels`, `visualmixer train --soft-label-file`)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from test_train import _cfg, _synthetic
from visualmixer.cli import main
from visualmixer.data.filesets import load_image_folder
from visualmixer.data.imageset import ImageSet
from visualmixer.train import loop as L
from visualmixer.train.fit import fit_classifier
from visualmixer.train.soft_labels import read_soft_labels, soft_target_loss, write_soft_labels

CLASSES = ("a", "b", "c", "d")


def _with_files(s: ImageSet) -> ImageSet:
    files = tuple(f"{s.classes[int(c)]}/{i}.png" for i, c in enumerate(s.labels))
    return ImageSet(s.images, s.labels, s.classes, s.name, files)


def _write_tree(root, s: ImageSet) -> None:
    for name, img in zip(s.files, s.images, strict=True):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy()).save(root / name)


def test_write_then_read_is_exact_and_follows_the_callers_order(tmp_path):
    files = [f"a/{i}.png" for i in range(5)]
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0)) * 7
    path = write_soft_labels(tmp_path / "s.csv", files, CLASSES, logits)
    assert path.read_text().splitlines()[0] == "file,a,b,c,d"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert torch.equal(read_soft_labels(path, files, CLASSES), logits)
    order = [3, 0, 4]
    assert torch.equal(read_soft_labels(path, [files[i] for i in order], CLASSES), logits[order])


@pytest.mark.parametrize("text, match", [
    ("name,a,b,c,d\n", "the first row must be the header"),
    ("file,a,b,x,d\n", r"for the classes \['a', 'b', 'x', 'd'\]; the training set has"),
    ("file,a,b,c,d\na/0.png,1,2,3\n", "line 2: expected a file name and 4 finite numbers"),
    ("file,a,b,c,d\na/0.png,1,2,3,nan\n", "line 2: expected a file name and 4 finite numbers"),
    ("file,a,b,c,d\na/0.png,1,2,3,x\n", "line 2: expected a file name and 4 finite numbers"),
    ("file,a,b,c,d\na/0.png,1,2,3,4\na/0.png,1,2,3,4\n", "line 3: 'a/0.png' is listed twice"),
    ("file,a,b,c,d\na/0.png,1,2,3,4\n", r"no row for 1 of the 2 training images \(e.g. 'a/1.png'\)"),
])
def test_a_bad_file_is_refused_with_its_reason(tmp_path, text, match):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_soft_labels(path, ["a/0.png", "a/1.png"], CLASSES)


def test_fit_reads_per_class_targets():
    """Targets (N, K) that always say class 2, against uniform folder labels: the student says 2;
    the default loss takes them as probabilities (torch's cross_entropy)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 8, 8, generator=g)
    targets = torch.full((256, 4), -4.0)
    targets[:, 2] = 4.0
    for loss in (soft_target_loss(2.0), None):
        student = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
        res = fit_classifier(student, (x, targets if loss else targets.softmax(1)), epochs=5, batch_size=32,
                             lr=1e-2, seed=0, loss_fn=loss)
        with torch.no_grad():
            assert (student(x).argmax(1) == 2).float().mean() > 0.95
        assert res.epochs[-1].accuracy > 0.95  # accuracy against the targets' argmax


def test_train_fits_the_file_not_the_folder_labels(tmp_path):
    train_set, test_set = _with_files(_synthetic(96, 0)), _synthetic(32, 1)
    logits = torch.full((96, 4), -5.0)
    logits[:, 1] = 5.0  # the file says "b" for every image
    path = write_soft_labels(tmp_path / "s.csv", train_set.files[::-1], CLASSES, logits)
    cfg = _cfg(tmp_path / "f", model="region-sorted", target_vfe=None, optimizer="adam", epochs=2,
               soft_label_file=str(path))
    res = L.train(cfg, sets=(train_set, test_set))
    assert res["runs"][0]["final_test_acc"] == pytest.approx(0.25)  # always "b": one class in four
    hard = L.train(_cfg(tmp_path / "h", model="region-sorted", target_vfe=None, optimizer="adam", epochs=2),
                   sets=(train_set, test_set))
    assert hard["runs"][0]["final_test_acc"] > 0.5
    # a resume must keep the file
    with pytest.raises(ValueError, match="soft_label_file"):
        L.train(_cfg(tmp_path / "h", model="region-sorted", target_vfe=None, optimizer="adam", epochs=3,
                     resume=True, soft_label_file=str(path)), sets=(train_set, test_set))


def test_a_set_without_file_names_is_refused(tmp_path):
    path = write_soft_labels(tmp_path / "s.csv", ["a/0.png"], CLASSES, torch.zeros(1, 4))
    cfg = _cfg(tmp_path / "n", target_vfe=None, epochs=1, soft_label_file=str(path))
    with pytest.raises(ValueError, match=r"needs a training set read from image files \(imagefolder:PATH\)"):
        L.train(cfg, sets=(_synthetic(8, 0), _synthetic(8, 1)))


@pytest.mark.parametrize("kw, match", [
    ({"soft_labels": "region-sorted", "target_vfe": 1.0}, "two sources of soft labels: give one"),
    ({"mix": 2, "target_vfe": 1.0}, "mixing them again"),
])
def test_soft_label_file_options_are_checked(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(tmp_path, soft_label_file="s.csv", **kw).validate()


def test_image_folders_name_their_files(tmp_path):
    s = _with_files(_synthetic(12, 0))
    _write_tree(tmp_path / "t", s)
    every = load_image_folder(tmp_path / "t", "train", test_fraction=0.0, channels=1)
    assert sorted(every.files) == sorted(s.files) and len(every) == 12
    assert all(every.files[i].startswith(every.classes[int(c)] + "/") for i, c in enumerate(every.labels))
    assert every.subset(5, seed=0).files == tuple(every.files[i] for i in
                                                  torch.randperm(12, generator=torch.Generator().manual_seed(0))[:5]
                                                  .sort().values.tolist())
    with pytest.raises(ValueError, match="no images for split 'test'"):
        load_image_folder(tmp_path / "t", "test", test_fraction=0.0, channels=1)


def mixed_release(tmp_path):
    """``(src, root)``: 48 originals in class folders ``src``, and ``root`` holding their release
    mixed in groups of 4 (``train/``) and 16 test images protected one by one (``test/``)."""
    src, test_src, root = tmp_path / "src", tmp_path / "test", tmp_path / "vm"
    _write_tree(src, _with_files(_synthetic(48, 0)))
    _write_tree(test_src, _with_files(_synthetic(16, 1)))
    key = tmp_path / "k.key"
    assert main(["keygen", str(key), "-q"]) == 0
    common = ["--key", str(key), "-q", "--target-vfe", "1.0", "--region", "4"]
    assert main(["obfuscate", str(src), str(root / "train"), *common, "--mix", "4",
                 "--manifest", str(tmp_path / "m.jsonl")]) == 0
    assert main(["obfuscate", str(test_src), str(root / "test"), *common, "--manifest", str(tmp_path / "t.jsonl")]) == 0
    return src, root


def test_the_owner_and_the_trainer_from_the_command_line(tmp_path, capsys):
    """obfuscate --mix (train) and one by one (test), soft-labels, then train on the release alone."""
    src, root = mixed_release(tmp_path)
    before = {p: p.read_bytes() for p in src.rglob("*.png")}
    args = ["soft-labels", str(src), str(root / "train"), "--channels", "1", "--region", "4", "--epochs", "2",
            "--batch-size", "16", "--no-progress"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 48 and 0.0 <= report["teacher_agrees_with_folder_label"] <= 1.0
    assert {p: p.read_bytes() for p in src.rglob("*.png")} == before  # the originals untouched
    sl = root / "train" / "soft-labels.csv"
    released = load_image_folder(root / "train", "train", test_fraction=0.0, channels=1)
    logits = read_soft_labels(sl, released.files, released.classes)
    assert logits.shape == (48, 4) and torch.isfinite(logits).all()
    assert np.isclose(float((logits.argmax(1) == released.labels).float().mean()),
                      report["teacher_agrees_with_folder_label"], atol=1e-4)
    assert main(args) == 2  # the file exists
    assert "--overwrite" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["train", "--data", f"imagefolder:{root}", "--channels", "1", "--target-vfe", "none", "--model",
                 "region-sorted", "--region", "4", "--soft-label-file", str(sl), "--epochs", "1",
                 "--batch-size", "16", "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["soft_label_file"] == str(sl)
    assert (metrics["train_images"], metrics["test_images"]) == (48, 16)
    capsys.readouterr()
    assert main(["train", "--data", f"imagefolder:{root}", "--soft-label-file", "s.csv", "--soft-labels",
                 "region-sorted", "--target-vfe", "1.0", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "--soft-label-file s.csv and --soft-labels region-sorted are two sources" in err


def test_soft_labels_command_refuses_other_classes(tmp_path, capsys):
    s = _with_files(_synthetic(8, 0))
    _write_tree(tmp_path / "src", s)
    _write_tree(tmp_path / "dst", ImageSet(s.images, s.labels, s.classes, "", tuple("x" + f for f in s.files)))
    assert main(["soft-labels", str(tmp_path / "src"), str(tmp_path / "dst"), "--channels", "1",
                 "--no-progress"]) == 2
    assert "the same" in capsys.readouterr().err
    assert not (tmp_path / "dst" / "soft-labels.csv").exists()


@pytest.mark.parametrize("workers, augment", [(0, []), (1, []), (1, ["hflip"])])
def test_online_training_fits_the_file_too(tmp_path, workers, augment):
    """Online re-shuffling (in process or in loader workers) keeps each image's row (and its views')."""
    train_set, test_set = _with_files(_synthetic(64, 0)), _synthetic(32, 1)
    logits = torch.full((64, 1 + len(augment), 4), -5.0)
    logits[..., 2] = 5.0  # the file says "c" for every image (and every view)
    path = write_soft_labels(tmp_path / "s.csv", train_set.files, CLASSES, logits if augment else logits[:, 0],
                             views=augment)
    cfg = _cfg(tmp_path / "o", model="region-sorted", target_vfe=1.0, mode="online", optimizer="adam", epochs=2,
               soft_label_file=str(path), loader_workers=workers, augment=augment)
    assert L.train(cfg, sets=(train_set, test_set))["runs"][0]["final_test_acc"] == pytest.approx(0.25)


def test_soft_labels_command_takes_the_teacher_model(tmp_path, capsys):
    """--model region-sorted-channels is the region-sorted teacher on grey images (the same file);
    a model that is not blind to the shuffle is refused by its flag."""
    src, root = mixed_release(tmp_path)
    base = ["soft-labels", str(src), str(root / "train"), "--channels", "1", "--region", "4", "--epochs", "1",
            "--batch-size", "16", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "pooled.csv")]) == 0
    assert main([*base, "--model", "region-sorted-channels", "--out", str(tmp_path / "each.csv")]) == 0
    assert (tmp_path / "pooled.csv").read_bytes() == (tmp_path / "each.csv").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*base, "--model", "cnn", "--out", str(tmp_path / "cnn.csv")])
    assert "--model" in capsys.readouterr().err and not (tmp_path / "cnn.csv").exists()


def test_a_rewrite_never_pairs_the_logits_with_another_teachers_features(tmp_path):
    """soft-labels --overwrite without --features: the first teacher's features file is removed
    (train --soft-label-features then refuses instead of mixing two teachers)."""
    from visualmixer.train.soft_labels import features_path, read_soft_labels, write_soft_labels

    files, classes = ["a/0.png", "b/1.png"], ["a", "b"]
    path = write_soft_labels(tmp_path / "s.csv", files, classes, torch.zeros(2, 2), features=torch.ones(2, 3))
    assert features_path(path).exists()
    write_soft_labels(path, files, classes, torch.ones(2, 2))
    assert not features_path(path).exists() and torch.equal(read_soft_labels(path, files, classes), torch.ones(2, 2))
