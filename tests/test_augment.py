"""Training-time augmentation on the region grid (`visualmixer train --augment`, `soft-labels --augment`)."""

import json

import pytest
import torch
from torch import nn

from test_soft_label_file import CLASSES, _with_files, _write_tree
from test_train import _cfg, _synthetic
from visualmixer.cli import main
from visualmixer.core.keys import Key
from visualmixer.core.mixer import obfuscate
from visualmixer.data.filesets import load_image_folder
from visualmixer.train import augment as A
from visualmixer.train import loop as L
from visualmixer.train.fit import fit_classifier
from visualmixer.train.models import RegionSortedCNN
from visualmixer.train.soft_labels import read_soft_labels, write_soft_labels


def test_mirror_grid_moves_whole_regions_and_keeps_the_remainder():
    x = torch.arange(2 * 3 * 30).reshape(2, 1, 3, 30)
    m = A.mirror_grid(x, 4)
    assert torch.equal(m[..., :28], x[..., :28].flip(-1)) and torch.equal(m[..., 28:], x[..., 28:])
    assert torch.equal(A.mirror_grid(x), x.flip(-1))
    assert torch.equal(A.mirror_grid(x[..., :28], 4), x[..., :28].flip(-1))
    assert torch.equal(A.mirror_grid(m, 4), x)  # its own inverse


def test_a_region_sorted_model_reads_a_mirrored_protected_image_as_the_mirrored_original():
    """The point of mirroring the grid: every region lands on a region, so the protection's in-region
    shuffle is still invisible to the region-sorted model — also with a remainder column (30 px, 4-px
    regions), where a plain flip would cut the regions apart."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 1, 28, 30), dtype=torch.uint8, generator=g)
    protected = obfuscate(x, target_vfe=1.0, key=Key.from_seed(0), ids=range(4), region=4).images
    net = RegionSortedCNN(1, 10, region=4).eval()
    with torch.no_grad():
        want = net(A.mirror_grid(x.float(), 4))
        assert torch.allclose(net(A.mirror_grid(protected.float(), 4)), want, atol=1e-5)
        assert not torch.allclose(net(protected.float().flip(-1)), want, atol=1e-3)


def test_flips_are_keyed_by_seed_and_epoch_and_pick_the_soft_label_view():
    x = torch.rand(64, 1, 4, 8)
    soft = torch.randn(64, 2, 3)
    flip = A.RegionGridFlip(region=4, seed=3)
    first, again = flip.make_params(64), (flip.set_epoch(0), flip.make_params(64))[1]
    assert torch.equal(first, again) and 10 < int(first.sum()) < 54
    flip.set_epoch(1)
    assert not torch.equal(flip.make_params(64), first)
    flip.set_epoch(0)
    before = x.clone()
    xa, ya = flip(x, soft)
    assert torch.equal(x, before)  # the caller's batch is not modified
    assert torch.equal(xa[first], x[first].flip(-1)) and torch.equal(xa[~first], x[~first])
    assert torch.equal(ya[first], soft[first, 1]) and torch.equal(ya[~first], soft[~first, 0])
    labels = torch.arange(64)
    assert torch.equal(flip(x, labels)[1], labels)  # hard labels and (B, K) targets pass unchanged
    none = A.RegionGridFlip(region=None, seed=0, p=0.0)
    assert torch.equal(none(x, labels)[0], x)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        A.RegionGridFlip(region=4, seed=0, p=1.5)


def test_the_model_and_the_loss_see_the_same_augmented_batch():
    """Consistent teaching: a teacher computing soft labels on the loss's ``inputs`` labels the view the
    model is trained on."""
    seen_model, seen_loss = [], []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 2)

        def forward(self, x):
            seen_model.append(x.clone())
            return self.lin(x.flatten(1))

    def loss(logits, y, inputs):
        seen_loss.append(inputs.clone())
        return nn.functional.cross_entropy(logits, y)

    x = torch.rand(32, 1, 4, 4)
    y = torch.arange(32) % 2
    fit_classifier(Spy(), (x, y), epochs=1, batch_size=8, seed=0, loss_fn=loss,
                   augment=A.RegionGridFlip(region=2, seed=0, p=1.0))
    assert len(seen_model) == 4
    assert all(torch.equal(a, b) for a, b in zip(seen_model, seen_loss, strict=True))
    rows = {tuple(r.flatten().tolist()) for b in seen_model for r in b}
    assert rows == {tuple(r.flip(-1).flatten().tolist()) for r in x}  # every image mirrored (p = 1)


def test_soft_label_file_with_views(tmp_path):
    files = [f"a/{i}.png" for i in range(5)]
    logits = torch.randn(5, 2, 4, generator=torch.Generator().manual_seed(0))
    path = write_soft_labels(tmp_path / "v.csv", files, CLASSES, logits, views=["hflip"])
    assert path.read_text().splitlines()[0] == "file,a,b,c,d,hflip:a,hflip:b,hflip:c,hflip:d"
    assert torch.equal(read_soft_labels(path, files, CLASSES, views=["hflip"]), logits)
    assert torch.equal(read_soft_labels(path, files, CLASSES), logits[:, 0])  # without the augmentation
    plain = write_soft_labels(tmp_path / "p.csv", files, CLASSES, logits[:, 0])
    with pytest.raises(ValueError, match=r"no soft labels of the 'hflip' view .*soft-labels --augment hflip"):
        read_soft_labels(plain, files, CLASSES, views=["hflip"])
    with pytest.raises(ValueError, match=r"logits must be \(5, 2, 4\)"):
        write_soft_labels(tmp_path / "x.csv", files, CLASSES, logits[:, 0], views=["hflip"])
    (tmp_path / "bad.csv").write_text("file,a,b,c,d,hflip:a,hflip:b,hflip:x,hflip:d\n")
    with pytest.raises(ValueError, match="is for the classes"):
        read_soft_labels(tmp_path / "bad.csv", files, CLASSES)


def test_unknown_augmentations_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"augment=\['rotate'\] is not allowed: each one of hflip"):
        _cfg(tmp_path, augment=["rotate"]).validate()
    with pytest.raises(ValueError, match="none twice"):
        _cfg(tmp_path, augment=["hflip", "hflip"]).validate()
    with pytest.raises(SystemExit):
        main(["train", "--augment", "rotate"])
    assert "--augment: invalid choice: 'rotate'" in capsys.readouterr().err


def test_training_with_flips_is_reproducible_and_resume_keeps_them(tmp_path):
    sets = (_synthetic(64, 0), _synthetic(32, 1))
    kw = dict(model="region-sorted", target_vfe=1.0, optimizer="adam", epochs=2, soft_labels="region-sorted",
              augment=["hflip"])
    a = L.train(_cfg(tmp_path / "a", **kw), sets=sets)["runs"][0]
    b = L.train(_cfg(tmp_path / "b", **kw), sets=sets)["runs"][0]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    plain = L.train(_cfg(tmp_path / "c", **{**kw, "augment": []}), sets=sets)["runs"][0]
    assert [h["train_loss"] for h in plain["history"]] != [h["train_loss"] for h in a["history"]]
    with pytest.raises(ValueError, match=r"augment=\['hflip'\] \(now \[\]\)"):
        L.train(_cfg(tmp_path / "a", **{**kw, "augment": [], "epochs": 3, "resume": True}), sets=sets)


def test_the_release_path_with_flips_from_the_command_line(tmp_path, capsys):
    src, root = tmp_path / "src", tmp_path / "vm"
    _write_tree(src, _with_files(_synthetic(32, 0)))
    key = tmp_path / "k.key"
    assert main(["keygen", str(key), "-q"]) == 0
    assert main(["obfuscate", str(src), str(root / "train"), "--key", str(key), "-q", "--target-vfe", "1.0",
                 "--region", "4", "--mix", "4", "--manifest", str(tmp_path / "m.jsonl")]) == 0
    owner = ["soft-labels", str(src), str(root / "train"), "--channels", "1", "--region", "4", "--epochs", "1",
             "--batch-size", "16", "--no-progress"]
    assert main([*owner, "--out", str(tmp_path / "plain.csv")]) == 0
    assert main([*owner, "--augment", "hflip"]) == 0
    capsys.readouterr()
    sl = root / "train" / "soft-labels.csv"
    released = load_image_folder(root / "train", "train", test_fraction=0.0, channels=1)
    views = read_soft_labels(sl, released.files, released.classes, views=["hflip"])
    assert views.shape == (32, 2, 4) and not torch.equal(views[:, 0], views[:, 1])
    train = ["train", "--data", f"imagefolder:{root / 'train'}", "--channels", "1", "--target-vfe", "none",
             "--model", "region-sorted", "--region", "4", "--epochs", "1", "--batch-size", "16", "--no-progress",
             "--augment", "hflip"]
    assert main([*train, "--soft-label-file", str(sl), "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["augment"] == ["hflip"]
    capsys.readouterr()
    assert main([*train, "--soft-label-file", str(tmp_path / "plain.csv"), "--out", str(tmp_path / "bad")]) == 2
    assert "visualmixer soft-labels --augment hflip" in capsys.readouterr().err


def test_training_on_a_protected_release_mirrors_its_region_grid(tmp_path, monkeypatch):
    """With --target-vfe none (an already protected release) the flips still keep the protection's
    grid, as `soft-labels --augment` labelled it: a remainder column (18 px, 4-px regions) stays put."""
    made = []

    def spy(names, *, region, seed):
        made.append(region)
        return A.make_augment(names, region=region, seed=seed)

    monkeypatch.setattr(L, "make_augment", spy)
    s = _synthetic(32, 0)
    wide = type(s)(torch.cat([s.images, s.images[..., :2]], dim=-1), s.labels, s.classes, s.name)
    L.train(_cfg(tmp_path, model="region-sorted", target_vfe=None, optimizer="adam", epochs=1, region=4,
                 augment=["hflip"]), sets=(wide, _synthetic(16, 1)))
    assert made == [4]
