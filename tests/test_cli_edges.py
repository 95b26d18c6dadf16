"""Command-line edges: `show` never replaces its input and writes the format its -o names,
error messages name only real flags, and --region is checked by argparse."""

from __future__ import annotations

import os
import re

import pytest
from PIL import Image

from visualmixer.cli import build_parser, main

try:
    from _vm_files import smooth_rgb
except ImportError:  # tests/ as a package
    from ._vm_files import smooth_rgb


def _png(path, seed: int = 0, size: int = 16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_rgb(size, size, seed)).save(path)
    return path


def test_show_never_replaces_its_input(tmp_path, capsys):
    img = _png(tmp_path / "d" / "img.png")
    before = img.read_bytes()
    os.link(img, tmp_path / "hard.png")
    for out in (img, tmp_path / "d" / ".." / "d" / "img.png", tmp_path / "hard.png"):
        assert main(["show", str(img), "-o", str(out), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert "is IMAGE itself" in err and "--overwrite" in err, err
    assert img.read_bytes() == before


def test_show_writes_the_format_its_suffix_names(tmp_path, capsys):
    img = _png(tmp_path / "img.png")
    magic = {"g.png": b"\x89PNG", "g.jpg": b"\xff\xd8", "g.JPEG": b"\xff\xd8", "g.bmp": b"BM",
             "g.tif": b"II*\x00", "g.webp": b"RIFF"}
    for name, start in magic.items():
        assert main(["show", str(img), "-o", str(tmp_path / name), "--target-vfe", "0.5"]) == 0
        assert (tmp_path / name).read_bytes().startswith(start), name
        assert Image.open(tmp_path / name).size[1] >= 16
    for name in ("g.gif", "g"):
        assert main(["show", str(img), "-o", str(tmp_path / name)]) == 2
        assert "cannot write a grid named" in capsys.readouterr().err
        assert not (tmp_path / name).exists()


def _flags(command: str) -> set[str]:
    sub = build_parser(only=command)._subparsers._group_actions[0].choices[command]
    return {s for a in sub._actions for s in a.option_strings}


def test_mixed_sizes_message_names_only_real_flags(tmp_path, capsys):
    src = tmp_path / "src"
    _png(src / "dog" / "a.png", 1, size=16)
    _png(src / "dog" / "b.png", 2, size=24)
    _png(src / "cat" / "c.png", 3, size=16)
    key = tmp_path / "k.key"
    assert main(["keygen", str(key), "-q"]) == 0
    assert main(["obfuscate", str(src), str(tmp_path / "dst"), "--key", str(key), "-q", "--mix", "2"]) == 2
    err = capsys.readouterr().err
    assert "differ in size" in err and "--image-size" not in err, err
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", err))
    assert named and named <= _flags("obfuscate"), named - _flags("obfuscate")


def test_the_size_parameter_becomes_a_flag_only_where_one_exists():
    from visualmixer.cli._common import flags_for

    message = "images differ in size; pass size=N to resize them"
    assert "--image-size 16" not in flags_for(message.replace("N", "16"), "obfuscate")
    for command in ("train", "soft-labels", "audit", "recommend", "run"):
        flag = flags_for(message, command).split("pass ")[1].split()[0]
        assert flag in _flags(command), (command, flag)


@pytest.mark.parametrize("message, command, want", [
    ("lr=nan is not allowed: give a finite number > 0", "train", "--lr nan is not allowed: give a finite number > 0"),
    ("lr=inf is not allowed", "train", "--lr inf is not allowed"),
    ("lr=-inf is not allowed", "train", "--lr -inf is not allowed"),
    ("weight_decay=inf is not allowed", "train", "--weight-decay inf is not allowed"),
    ("target_acc=nan is not allowed", "train", "--target-acc nan is not allowed"),
    ("soft_label_temperature=nan is not allowed", "train", "--soft-label-temperature nan is not allowed"),
    ("lr=1e-05 is small; lr=2.5e+03.", "train", "--lr 1e-05 is small; --lr 2.5e+03."),
    ("made with target_vfe=0.5.", None, "made with --target-vfe 0.5."),
])
def test_flags_for_keeps_every_number_python_writes_apart_from_the_flag(message, command, want):
    from visualmixer.cli._common import flags_for

    assert flags_for(message, command) == want


@pytest.mark.parametrize("command", ["obfuscate", "show"])
@pytest.mark.parametrize("side", ["100000", "257", "120", "240", "0", "x"])
def test_region_outside_the_core_range_is_a_usage_error(command, side, tmp_path, capsys):
    args = {"obfuscate": [str(tmp_path), str(tmp_path / "o"), "--key", "k"],
            "show": [str(tmp_path / "i.png"), "-o", str(tmp_path / "g.png")]}[command]
    with pytest.raises(SystemExit) as exc:
        main([command, *args, "--region", side])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --region:" in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_region_help_states_the_range_the_core_accepts():
    from visualmixer.cli._common import REGION_RANGE, region_side
    from visualmixer.core.regions import MAX_LEVELS, tile_ladder

    refused = [r for r in range(1, 257) if len(tile_ladder(r)) > MAX_LEVELS]
    assert REGION_RANGE == (f"1 to 256, except sides with more than {MAX_LEVELS} shuffle levels "
                            f"({', '.join(map(str, refused))})")
    assert [region_side(str(r)) for r in (1, 16, 256)] == [1, 16, 256]
    for command in ("obfuscate", "show"):
        sub = build_parser(only=command)._subparsers._group_actions[0].choices[command]
        assert REGION_RANGE in " ".join(sub.format_help().split())


def test_train_bounds_image_size_and_names_model_and_data_as_flags():
    from visualmixer.cli._common import flags_for
    from visualmixer.train.config import TrainConfig

    with pytest.raises(ValueError, match="image_size: must be at most 4096, got 100000"):
        TrainConfig(image_size=100000).validate()
    assert flags_for("model='cnn' (now 'region-sorted'); data='fashion-mnist'", "train") == \
        "--model cnn (now 'region-sorted'); --data fashion-mnist"
