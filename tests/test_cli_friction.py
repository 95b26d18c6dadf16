"""Friction a new user met on the command line (issue 14), each message checked by its content."""

from __future__ import annotations

import json
import os
import re
import stat

import numpy as np
import pytest
from PIL import Image

from visualmixer.cli import COMMANDS, build_parser, main


def _png(path, width: int, height: int, channels: int = 3):
    rng = np.random.default_rng(0)
    shape = (height, width, channels) if channels == 3 else (height, width)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


# --- keygen ------------------------------------------------------------------------------------


def test_keygen_creates_a_missing_folder_private(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["keygen", "secret/my.key"]) == 0
    err = capsys.readouterr().err
    assert "created folder secret (mode 0700)" in err and "wrote a new key to secret/my.key" in err
    assert ".tmp" not in err
    assert stat.S_IMODE(os.stat("secret").st_mode) == 0o700
    assert stat.S_IMODE(os.stat("secret/my.key").st_mode) == 0o600
    # nested missing folders, all private
    assert main(["keygen", "a/b/c.key", "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert stat.S_IMODE(os.stat("a").st_mode) == stat.S_IMODE(os.stat("a/b").st_mode) == 0o700
    # never replaces a key
    assert main(["keygen", "secret/my.key"]) == 2
    err = capsys.readouterr().err
    assert "KEYFILE: secret/my.key already exists" in err


def test_key_save_never_names_its_temporary_file(tmp_path, monkeypatch):
    from visualmixer.core import keys

    key = keys.Key.generate()
    with pytest.raises(FileNotFoundError) as exc:
        key.save(tmp_path / "missing" / "my.key")
    assert "folder" in str(exc.value) and "missing" in str(exc.value) and ".tmp" not in str(exc.value)

    def denied(path, data, **kw):
        raise PermissionError(13, "Permission denied", str(path.with_name(f".{path.name}.3d3ea5d3.tmp")))

    monkeypatch.setattr(keys, "replace_atomically", denied)
    with pytest.raises(PermissionError) as exc:
        key.save(tmp_path / "my.key")
    msg = str(exc.value)
    assert msg == f"cannot write key file {tmp_path / 'my.key'}: Permission denied"


# --- vfe / show: --max-pixels, W×H ------------------------------------------------------------


def test_vfe_prints_width_by_height(tmp_path, capsys):
    img = _png(tmp_path / "wide.png", width=45, height=30)
    assert main(["vfe", str(img)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "size (W×H)" in out[0]
    assert "45×30" in out[1] and "30x45" not in out[1] and "30×45" not in out[1]


def test_vfe_max_pixels_flag_and_one_limit(tmp_path, capsys):
    img = _png(tmp_path / "wide.png", width=45, height=30)  # 1350 pixels
    assert main(["vfe", str(img), "--max-pixels", "1000"]) == 1
    err = capsys.readouterr().err
    assert "limit of 1000 pixels" in err and err.count("limit of") == 1
    assert "raise it with --max-pixels N" in err and "max_pixels=" not in err
    assert main(["vfe", str(img), "--max-pixels", "2000", "--json"]) == 0
    assert '"width": 45' in capsys.readouterr().out


def test_vfe_bomb_names_one_limit(tmp_path, capsys):
    try:
        from _vm_files import bomb_png
    except ImportError:  # tests/ as a package
        from ._vm_files import bomb_png
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(30000, 30000))
    assert main(["vfe", str(bomb)]) == 1
    err = capsys.readouterr().err
    assert "declared dimensions (900000000 pixels)" in err and err.count("limit of") == 1
    assert "raise the limit with --max-pixels" in err


def test_show_max_pixels_flag(tmp_path, capsys):
    img = _png(tmp_path / "photo.png", width=45, height=30)
    grid = tmp_path / "grid.png"
    assert main(["show", str(img), "-o", str(grid), "--max-pixels", "1000"]) == 2
    err = capsys.readouterr().err
    assert "limit of 1000 pixels" in err and "--max-pixels" in err and not grid.exists()
    assert main(["show", str(img), "-o", str(grid), "--max-pixels", "2000", "--target-vfe", "0.5"]) == 0
    assert grid.exists()
    capsys.readouterr()
    assert main(["show", str(img), "-o", str(grid)]) == 2
    err = capsys.readouterr().err
    assert "-o/--output" in err and "--overwrite" in err and "overwrite=True" not in err


# --- help texts --------------------------------------------------------------------------------


def test_train_help_lists_defaults_and_choices(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "training epochs per seed (default: 3)" in text
    assert "training batch size (default: 128)" in text
    assert "one run per seed" in text and "(default: 0)" in text
    assert "weight decay" in text and "default: 0.0" in text
    assert "--model {cnn,resnet18,shufflenet,region-sorted,region-sorted-channels}" in text
    assert "--mode {offline,online}" in text
    assert main(["train", "--mode", "sometimes", "--no-progress"]) == 2
    assert "valid: offline, online" in capsys.readouterr().err


def _all_help_texts() -> dict[str, str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "run" in a.choices)  # noqa: SLF001
    texts = {"visualmixer": parser.format_help()}
    for name, p in sub.choices.items():
        texts[name] = p.format_help()
    return texts


def test_help_texts_are_self_contained():
    texts = _all_help_texts()
    assert set(texts) >= {"run", "vfe", "show", "train", "keygen"}
    for name, text in texts.items():
        assert not re.search(r"SPEC\W{0,3}(§|section|\d)", text), name
        assert "issue " not in text.lower(), name
        assert "../shared" not in text, name
        assert "``" not in text, name
    assert len(COMMANDS) >= 5


def test_readme_is_self_contained_and_states_measured_vfe():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "../shared" not in readme and "SPEC §" not in readme and "SPEC.md" not in readme
    assert "noise scores ≈ 1" in readme and "0.11" in readme and "0.41" in readme
    assert "v2.Compose([v2.PILToTensor(), vm.VisualMixer(" in readme
    assert "set_transform(hf_batch_transform(None" in readme


def test_score_files_is_library_work(tmp_path):
    """`visualmixer vfe` only parses and prints: tools.scoring reads, batches and scores."""
    from visualmixer.tools.scoring import image_files, score_files

    for i in range(3):
        _png(tmp_path / f"same{i}.png", width=20, height=16)
    _png(tmp_path / "grey.png", width=12, height=10, channels=1)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("x")
    files = image_files([tmp_path])
    assert [os.path.basename(f) for f in files] == ["broken.png", "grey.png", "same0.png", "same1.png",
                                                    "same2.png"]
    result = score_files(files, chunk=2)
    assert [s.path for s in result.scores] == files[1:]
    assert (result.scores[0].width, result.scores[0].height, result.scores[0].channels) == (12, 10, 1)
    assert all(0.9 < s.vfe < 1.1 for s in result.scores)  # uniform noise scores about 1
    assert result.failed[0][0] == files[0] and "not a recognised image format" in result.failed[0][1]
    summary = result.summary()
    assert summary["count"] == 4 and summary["failed"] == 1
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        image_files([tmp_path / "nowhere"])


def test_side_by_side_is_library_work():
    """`visualmixer show` only parses and prints: tools.preview composes the picture."""
    import torch

    from visualmixer.tools.preview import side_by_side

    grey = torch.arange(30 * 45, dtype=torch.int64).remainder(256).to(torch.uint8).view(1, 30, 45)
    pic = side_by_side([grey, grey], ["original", "target 0.50: VFE 0.512"], min_side=64, gap=4, label_height=14)
    assert pic.shape == (14 + 90, 2 * 135 + 4, 3) and pic.dtype == np.uint8  # enlarged 3x to reach 64
    assert np.array_equal(pic[14, :3, 0], [0, 0, 0]) and np.array_equal(pic[14, 3:6, 0], [1, 1, 1])
    assert (pic[14:, 135:139] == 255).all()  # the gap
    with pytest.raises(ValueError, match="same shape"):
        side_by_side([grey, grey[:, :10]], ["a", "b"])


def test_training_reports_the_one_off_obfuscation_apart_from_epoch_times(tmp_path, capsys):
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for k, c in enumerate(("dark", "light")):
        (root / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray((rng.integers(0, 120, (16, 16, 3)) + 120 * k).astype(np.uint8)).save(root / c / f"{i}.png")
    rc = main(["train", "--data", f"imagefolder:{root}", "--epochs", "1", "--batch-size", "8",
               "--target-vfe", "0.5", "--channels-last", "--out", str(tmp_path / "run")])
    assert rc == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["channels_last"] is True
    out = capsys.readouterr().out
    assert "seed 0: obfuscated the training and test images once in" in out
    assert "(not counted in the epoch times)" in out and "seed 0 epoch 1/1" in out
