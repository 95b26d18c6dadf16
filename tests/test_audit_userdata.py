"""`visualmixer audit --data imagefolder:PATH / hf:PATH`: a user's own images, split like the built-in sets."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from visualmixer.cli import main
from visualmixer.eval.report.data import load_audit_data
from visualmixer.eval.userdata import count_user_images, load_user_images
from visualmixer.eval.usersplit import fit_split_sizes, split_user_data
from visualmixer.tools.imageio import read_image


def make_folder(root, *, classes=3, per_class=10, size=(16, 16), grey=(), broken=0, seed=0):
    """``root/c<k>/<i>.png``: distinct random images (``size`` = (width, height)); ``grey`` lists
    the classes saved grey; ``broken`` adds that many unreadable .png files to class 0."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            im = Image.fromarray(a).convert("L") if c in grey else Image.fromarray(a)
            im.save(root / f"c{c}" / f"{i}.png")
    for i in range(broken):
        (root / "c0" / f"broken{i}.png").write_bytes(b"this is not an image")
    return root


def make_hf(path, *, per_class=10, size=16, image_column="image", label_column="label", classlabel=True, seed=0):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(3):
        for _ in range(per_class):
            images.append(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
            labels.append(c)
    label_feature = datasets.ClassLabel(names=["cat", "dog", "eel"]) if classlabel else datasets.Value("int64")
    features = datasets.Features({image_column: datasets.Image(), label_column: label_feature})
    datasets.Dataset.from_dict({image_column: images, label_column: labels}, features=features).save_to_disk(str(path))
    return path


def make_tool_edge_files(root):
    """Two classes, each one 16-bit grey PNG (values above 255) and one JPEG whose EXIF orientation
    (6: turn 90 degrees) makes its stored 16x8 pixels an upright 8x16 image. Returns
    ``(grey root, jpeg root)``; the files are ``c<k>/<i>.png`` / ``c<k>/<i>.jpg``."""
    rng = np.random.default_rng(3)
    for c in range(2):
        (root / "grey16" / f"c{c}").mkdir(parents=True)
        (root / "exif" / f"c{c}").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 65536, (8, 8), dtype=np.uint16)).save(root / "grey16" / f"c{c}" / "0.png")
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)).save(
            root / "exif" / f"c{c}" / "0.jpg", exif=exif)
    return root / "grey16", root / "exif"


def test_user_images_are_decoded_as_the_tools_read_them(tmp_path):
    grey, exif = make_tool_edge_files(tmp_path)
    for root, shape in ((grey, (1, 8, 8)), (exif, (3, 16, 8))):
        pool = load_user_images(f"imagefolder:{root}")
        want = torch.stack([read_image(root / f"c{c}" / f"0.{'png' if root == grey else 'jpg'}") for c in range(2)])
        assert want.shape[1:] == shape  # (16-bit scaled, not clipped to 255; the JPEG upright)
        assert torch.equal(pool.images, want)


def test_imagefolder_pool_skips_unreadable_and_ignores_other_files(tmp_path):
    root = make_folder(tmp_path / "imgs", broken=2)
    (root / "c1" / "notes.txt").write_text("not an image")
    pool = load_user_images(f"imagefolder:{root}")
    assert pool.images.shape == (30, 3, 16, 16) and pool.images.dtype == torch.uint8
    assert pool.classes == ("c0", "c1", "c2") and pool.counts() == {"c0": 10, "c1": 10, "c2": 10}
    notes = " ".join(pool.notes)
    assert "skipped 2 unreadable of 32 images" in notes
    assert "1 files without an image extension were ignored" in notes


def test_only_what_the_split_needs_is_decoded(tmp_path, monkeypatch):
    import visualmixer.eval.userdata as ud

    root = make_folder(tmp_path / "imgs", per_class=10, broken=3)
    opened = []
    real = ud._Lazy.load
    monkeypatch.setattr(ud._Lazy, "load", lambda self: opened.append(self.name) or real(self))
    pool = load_user_images(f"imagefolder:{root}", per_class=4, seed=1)
    assert pool.counts() == {"c0": 4, "c1": 4, "c2": 4}  # broken files replaced by readable ones
    assert 12 <= len(opened) <= 15 and len(set(opened)) == len(opened)
    assert any("read 12 of 33 images (at most 4 per class" in n for n in pool.notes)
    d = load_audit_data(f"imagefolder:{root}", n_train=6, n_victims=3, n_attacker=3, seed=0)
    assert len(d.train_images) + len(d.victim_images) + len(d.attacker_images) == 12


def test_mixed_sizes_are_refused_whichever_images_the_seed_picks(tmp_path):
    # Only per_class images per class are decoded; the refusal must not depend on which (it did:
    # seeds that left the one odd image out accepted the set, the others refused it).
    root = make_folder(tmp_path / "imgs", per_class=10)
    Image.fromarray(np.zeros((30, 20, 3), np.uint8)).save(root / "c1" / "tall.png")
    for seed in range(6):
        with pytest.raises(ValueError, match="differ in size"):
            load_user_images(f"imagefolder:{root}", per_class=2, seed=seed)
    assert load_user_images(f"imagefolder:{root}", per_class=2, image_size=12).images.shape == (6, 3, 12, 12)


def test_the_size_check_reads_headers_upright(tmp_path):
    # A JPEG stored 16 wide x 8 tall with EXIF orientation 6 is an upright 8x16 image, the size of
    # the others: one size, not refused (the header pass applies the orientation as decoding does).
    _, exif = make_tool_edge_files(tmp_path)
    rng = np.random.default_rng(0)
    for c in range(2):
        for i in range(1, 4):
            Image.fromarray(rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)).save(exif / f"c{c}" / f"{i}.png")
    pool = load_user_images(f"imagefolder:{exif}", per_class=2, seed=0)
    assert pool.images.shape == (4, 3, 16, 8)


def test_the_size_check_never_waits_on_a_fifo(tmp_path):
    # A FIFO named like an image is skipped by the decode (not a regular file); the header pass
    # opened it as a plain file and waited for a writer forever.
    import os
    import threading

    root = make_folder(tmp_path / "imgs", classes=2, per_class=5)
    fifo = root / "c0" / "pipe.png"
    os.mkfifo(fifo)
    hung = []

    def unblock():  # give a reader stuck in open() its writer (and EOF), so a failing test ends
        hung.append(True)
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    timer = threading.Timer(20, unblock)
    timer.start()
    try:
        pool = load_user_images(f"imagefolder:{root}", per_class=2, seed=0)
    finally:
        timer.cancel()
    assert not hung, "the size check waited on the FIFO"
    assert pool.counts() == {"c0": 2, "c1": 2}


def test_the_size_check_decodes_no_png(tmp_path, monkeypatch):
    # Reading a PNG's EXIF with getexif() decodes the whole image (Pillow looks for an eXIf chunk
    # after the pixel data): the header pass decoded every file of the folder, not just the sample.
    from PIL import PngImagePlugin

    root = make_folder(tmp_path / "imgs", classes=3, per_class=10)
    decoded = []
    real = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load",
                        lambda self: (self.tile and decoded.append(1)) or real(self))  # (tile: not decoded yet)
    pool = load_user_images(f"imagefolder:{root}", per_class=2, seed=0)
    assert pool.counts() == {"c0": 2, "c1": 2, "c2": 2} and len(decoded) == 6  # the sample only
    exif = Image.Exif()  # an eXIf before the pixel data (as Pillow writes it) still turns the header's size
    exif[0x0112] = 6
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(root / "c0" / "turned.png", exif=exif)
    with pytest.raises(ValueError, match="16x8 as width x height|8x16"):
        load_user_images(f"imagefolder:{root}", per_class=2, seed=0)


def test_the_size_check_gives_no_bomb_warning_for_images_the_decode_accepts(tmp_path, monkeypatch):
    # Pillow warns above MAX_IMAGE_PIXELS; the audit decodes up to twice that without a word, and
    # so must the header pass (a folder of 100-megapixel photos gave one warning per file).
    import warnings

    from PIL import Image as PILImage

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # 12 x 12 = 144 pixels: warned, not refused
    root = make_folder(tmp_path / "imgs", classes=2, per_class=5, size=(12, 12))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        pool = load_user_images(f"imagefolder:{root}", per_class=2, seed=0)
    assert pool.images.shape == (4, 3, 12, 12)
    assert not [w for w in seen if issubclass(w.category, PILImage.DecompressionBombWarning)]


def test_the_split_functions_import_from_userdata_as_before():
    import visualmixer.eval.usersplit as us
    from visualmixer.eval.userdata import MIN_PER_CLASS, fit_split_sizes
    from visualmixer.eval.userdata import split_user_data as old

    assert (old, fit_split_sizes, MIN_PER_CLASS) == (us.split_user_data, us.fit_split_sizes, us.MIN_PER_CLASS)


def test_split_is_disjoint_stratified_and_seeded(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=12)
    d = load_audit_data(f"imagefolder:{root}", n_train=15, n_victims=6, n_attacker=9, seed=3)
    assert (len(d.train_images), len(d.victim_images), len(d.attacker_images)) == (15, 6, 9)
    assert d.num_classes == 3 and d.classes == ("c0", "c1", "c2")
    rows = torch.cat([d.train_images, d.victim_images, d.attacker_images]).flatten(1)
    assert len({bytes(r.numpy()) for r in rows}) == 30  # every image in one part only
    for part in (d.train_labels, d.victim_labels, d.attacker_labels):
        assert set(part.tolist()) == {0, 1, 2}  # every class in every part
    again = load_audit_data(f"imagefolder:{root}", n_train=15, n_victims=6, n_attacker=9, seed=3)
    assert torch.equal(again.victim_images, d.victim_images)
    other = load_audit_data(f"imagefolder:{root}", n_train=15, n_victims=6, n_attacker=9, seed=4)
    assert not torch.equal(other.victim_images, d.victim_images)


def test_too_few_images_per_class_says_how_many(tmp_path, capsys):
    root = make_folder(tmp_path / "imgs", per_class=5)
    with pytest.raises(ValueError) as exc:
        load_audit_data(f"imagefolder:{root}", n_train=30, n_victims=6, n_attacker=9, seed=0)
    msg = str(exc.value)
    assert "need 15 images per class (10 training + 2 victims + 3 attacker)" in msg
    assert "'c0' has 5" in msg and "n_train=N" in msg
    rc = main(["audit", "--data", f"imagefolder:{root}", "--train", "30", "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "need" in err and "has 5" in err and "--train N, --victims N, --attacker N" in err
    assert "n_train" not in err


def test_fitted_sizes_and_the_minimum():
    assert fit_split_sizes({"a": 20, "b": 30}, n_train=2000, n_victims=200, n_attacker=1200) == (18, 6, 14)
    assert fit_split_sizes([20, 30], n_train=10, n_victims=2, n_attacker=4) == (10, 2, 4)
    with pytest.raises(ValueError, match="at least 3 images .* the smallest has 2"):
        fit_split_sizes([2, 30], n_train=10, n_victims=2, n_attacker=4)


def test_mixed_sizes_need_image_size(tmp_path, capsys):
    root = make_folder(tmp_path / "imgs", per_class=4)
    Image.fromarray(np.zeros((30, 20, 3), np.uint8)).save(root / "c1" / "tall.png")
    with pytest.raises(ValueError) as exc:
        load_user_images(f"imagefolder:{root}")
    assert "differ in size" in str(exc.value) and "20x30" in str(exc.value) and "image_size=N" in str(exc.value)
    rc = main(["audit", "--data", f"imagefolder:{root}", "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "--image-size N" in err and "image_size" not in err
    pool = load_user_images(f"imagefolder:{root}", image_size=12)
    assert pool.images.shape == (13, 3, 12, 12)
    assert any("centre-cropped to 12x12" in n for n in pool.notes)


def test_resize_keeps_the_centre(tmp_path):
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        a = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high: the centre 20x20 is white
        a[:, 10:30] = 255
        for i in range(3):
            Image.fromarray(a).save(root / c / f"{i}.png")
    pool = load_user_images(f"imagefolder:{root}", image_size=10)
    assert pool.images.shape == (6, 3, 10, 10)
    assert pool.images.float().mean() > 250  # the black side strips were cropped away
    assert pool.native_sizes == ((20, 40),)


def test_grey_and_colour_mix_is_converted_with_a_note(tmp_path):
    root = make_folder(tmp_path / "mix", grey=(1,))
    pool = load_user_images(f"imagefolder:{root}")
    assert pool.images.shape[1] == 3
    grey = pool.images[pool.labels == 1]
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    assert any("10 of 30 images are grey" in n and "converted to colour" in n for n in pool.notes)
    all_grey = load_user_images(f"imagefolder:{make_folder(tmp_path / 'grey', grey=(0, 1, 2))}")
    assert all_grey.images.shape[1] == 1 and not all_grey.notes


def test_folder_layout_errors(tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / f"{i}.png")
    with pytest.raises(ValueError, match="no class sub-folders.*holds 3 image files directly.*sub-folder per class"):
        load_user_images(f"imagefolder:{flat}")
    one = make_folder(tmp_path / "one", classes=1)
    with pytest.raises(ValueError, match="at least two classes, found 1"):
        load_user_images(f"imagefolder:{one}")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_user_images(f"imagefolder:{tmp_path / 'missing'}")
    rc = main(["audit", "--data", f"imagefolder:{flat}", "--out", str(tmp_path / "o"), "-q"])
    assert rc == 2 and "no class sub-folders" in capsys.readouterr().err


def test_links_never_count_an_image_twice(tmp_path):
    """A link back up a class folder (a loop) and a second link to one file: each image once."""
    root = make_folder(tmp_path / "d", classes=2, per_class=4)
    os.symlink(root / "c0", root / "c0" / "loop")
    os.symlink(root / "c0" / "1.png", root / "c0" / "again.png")
    assert count_user_images(f"imagefolder:{root}") == {"c0": 4, "c1": 4}
    assert load_user_images(f"imagefolder:{root}").counts() == {"c0": 4, "c1": 4}


def test_train_test_split_folders_are_pooled(tmp_path):
    make_folder(tmp_path / "s" / "train", per_class=4, seed=1)
    make_folder(tmp_path / "s" / "test", per_class=2, seed=2)
    pool = load_user_images(f"imagefolder:{tmp_path / 's'}")
    assert pool.counts() == {"c0": 6, "c1": 6, "c2": 6}


def test_hf_saved_dataset_columns_detected_or_named(tmp_path, capsys):
    path = make_hf(tmp_path / "hf")
    pool = load_user_images(f"hf:{path}")
    assert pool.images.shape == (30, 3, 16, 16) and pool.classes == ("cat", "dog", "eel")
    odd = make_hf(tmp_path / "odd", image_column="picture", label_column="target", classlabel=False)
    with pytest.raises(ValueError, match="which column holds the labels.*picture, target.*label_column=NAME"):
        load_user_images(f"hf:{odd}")
    with pytest.raises(ValueError, match="image_column='pix': no such column"):
        load_user_images(f"hf:{odd}", image_column="pix", label_column="target")
    pool = load_user_images(f"hf:{odd}", label_column="target")
    assert pool.classes == ("0", "1", "2") and pool.counts() == {"0": 10, "1": 10, "2": 10}
    rc = main(["audit", "--data", f"hf:{odd}", "--out", str(tmp_path / "o"), "-q"])
    assert rc == 2 and "--label-column NAME" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a data set saved with save_to_disk"):
        load_user_images(f"hf:{make_folder(tmp_path / 'notds', per_class=1)}")


def test_hf_dataset_dict_splits_are_pooled_and_alpha_is_noted(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})

    def part(n, mode):
        ims = [Image.fromarray(rng.integers(0, 256, (12, 12, 4), dtype=np.uint8), "RGBA").convert(mode)
               for _ in range(n)]
        return datasets.Dataset.from_dict({"image": ims, "label": [i % 2 for i in range(n)]}, features=feats)

    datasets.DatasetDict({"train": part(8, "RGBA"), "test": part(4, "RGB")}).save_to_disk(str(tmp_path / "dd"))
    pool = load_user_images(f"hf:{tmp_path / 'dd'}")
    assert pool.images.shape == (12, 3, 12, 12) and pool.classes == ("a", "b")
    assert any("transparency of 8 images was dropped" in n for n in pool.notes)
    assert any("classes without images left out: c" in n for n in pool.notes)


def test_hf_rows_without_a_label_are_left_out(tmp_path):
    """ClassLabel's -1 ("no label", common in test splits) is no class: never the last class's
    (names[-1]); None labels likewise, with a note."""
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(1)
    ims = [Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)) for _ in range(9)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    labelled = datasets.Dataset.from_dict({"image": ims[:6], "label": [0, 1] * 3}, features=feats)
    unlabelled = datasets.Dataset.from_dict({"image": ims[6:], "label": [-1] * 3}, features=feats)
    datasets.DatasetDict({"train": labelled, "test": unlabelled}).save_to_disk(str(tmp_path / "dd"))
    pool = load_user_images(f"hf:{tmp_path / 'dd'}")
    assert pool.counts() == {"a": 3, "b": 3} and any("3 row(s) without a label" in n for n in pool.notes)
    plain = datasets.Dataset.from_dict({"image": ims[:7], "label": [0, 1, 0, 1, 0, 1, None]})
    plain.save_to_disk(str(tmp_path / "none"))
    pool = load_user_images(f"hf:{tmp_path / 'none'}")
    assert pool.counts() == {"0": 3, "1": 3} and any("1 row(s) without a label" in n for n in pool.notes)


def test_split_user_data_error_names_parameters(tmp_path):
    pool = load_user_images(f"imagefolder:{make_folder(tmp_path / 'imgs', per_class=4)}")
    with pytest.raises(ValueError, match="n_victims=N"):
        split_user_data(pool, n_train=3, n_victims=30, n_attacker=3)
    # the files that could not be read are named where they made a class too small
    pool = load_user_images(f"imagefolder:{make_folder(tmp_path / 'broken', per_class=4, broken=3)}")
    with pytest.raises(ValueError, match=r"'c2' has 4 \(readable images only: skipped 3 unreadable of 15"):
        split_user_data(pool, n_train=3, n_victims=30, n_attacker=3)


@pytest.mark.parametrize("kind", ["imagefolder", "hf"])
def test_audit_cli_on_user_data(tmp_path, kind, capsys):
    src = make_folder(tmp_path / "imgs", broken=1) if kind == "imagefolder" else make_hf(tmp_path / "hf")
    out = tmp_path / "audit"
    rc = main(["audit", "--data", f"{kind}:{src}", "--methods", "visualmixer:0.5", "--attacks", "A1,A2,A3,A4",
               "--epochs", "1", "--a3-epochs", "1", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "split sizes fitted to the data: 12 training, 3 victims, 9 attacker images" in err
    res = json.loads((out / "results.json").read_text())
    ds = res["datasets"][f"{kind}:{src}"]
    assert (ds["n_train"], ds["n_victims"], ds["n_attacker"], ds["shape"]) == (12, 3, 9, [3, 16, 16])
    vm = ds["methods"]["visualmixer:0.5"]
    assert "error" not in vm and {"A1", "A2", "A3"} <= set(vm["attacks"]) and "accuracy_loss_pp" in vm
    if kind == "imagefolder":
        assert any("skipped 1 unreadable" in n for n in res["notes"])
    assert "keep it as private as the images themselves" in (out / "index.html").read_text(encoding="utf-8")


def test_a_custom_attacker_is_labelled_with_the_fitted_split(tmp_path, monkeypatch):
    """--a3-base makes the attacker "custom": its label must give the attacker images the audit
    uses (fitted to the data), not the preset's 1200."""
    import visualmixer.eval.report as report

    seen = []
    monkeypatch.setattr(report, "audit", lambda out, cfg, log=None: seen.append(cfg) or tmp_path / "index.html")
    src = make_folder(tmp_path / "imgs")
    assert main(["audit", "--data", f"imagefolder:{src}", "--a3-base", "4", "--out", str(tmp_path / "a"), "-q"]) == 0
    cfg = seen[0]
    assert cfg.n_attacker == 9 and cfg.attacker_strength == "custom attacker (9 own images, U-Net width 4, at most " \
        f"{cfg.a3_epochs} epochs)"


def test_an_out_that_is_a_file_is_refused_before_the_audit(tmp_path, capsys, monkeypatch):
    import visualmixer.eval.report as report

    ran = []
    monkeypatch.setattr(report, "run_audit", lambda cfg, log=None: ran.append(cfg) or ({}, {}))
    (tmp_path / "file").write_text("x")
    src = make_folder(tmp_path / "imgs")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        assert main(["audit", "--data", f"imagefolder:{src}", "--methods", "clean", "--out", str(out), "-q"]) == 2
        err = capsys.readouterr().err
        assert f"error: --out: {out} " in err and "Errno" not in err, err
        with pytest.raises(ValueError, match="out_dir: "):
            report.audit(out, log=lambda s: None)
    assert ran == [] and (tmp_path / "file").read_text() == "x"


def test_one_split_flag_keeps_the_others_fitted(tmp_path):
    """--victims alone: the training and attacker sizes are still fitted to the folder (before,
    any one flag turned the fitting off and the preset's 2000 / 1200 images were asked for)."""
    import argparse
    import dataclasses

    from visualmixer.cli.audit import fit_user_data
    from visualmixer.eval.report import QUICK

    src = make_folder(tmp_path / "imgs", per_class=8)
    cfg = dataclasses.replace(QUICK, datasets=(f"imagefolder:{src}",), n_victims=6)
    fitted = fit_user_data(cfg, argparse.Namespace(train=None, victims=6, attacker=None), lambda s: None)
    assert fitted.n_victims == 6 and (fitted.n_train, fitted.n_attacker) == (9, 6)


def test_image_size_is_bounded(tmp_path, capsys):
    src = make_folder(tmp_path / "imgs", per_class=4)
    for size in (4, 5000):
        with pytest.raises(ValueError, match=f"image_size: must be from 8 to 1024, got {size}"):
            load_user_images(f"imagefolder:{src}", image_size=size)
    rc = main(["audit", "--data", f"imagefolder:{src}", "--image-size", "100000", "--out", str(tmp_path / "o"), "-q"])
    assert rc == 2 and "--image-size: must be from 8 to 1024, got 100000" in capsys.readouterr().err
