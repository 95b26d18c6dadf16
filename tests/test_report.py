"""visualmixer.report and `visualmixer audit`: the report renders and every image it references exists."""

import base64
import json
import re
from pathlib import Path

import pytest

from visualmixer.report import AuditConfig, audit, expand_methods
from visualmixer.report.audit import Protector

PNG = b"\x89PNG\r\n\x1a\n"


def check_page(index: Path) -> str:
    text = index.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    srcs = re.findall(r'src="([^"]+)"', text)
    assert srcs, "the report shows no image"
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), f"not self-contained: {src[:40]}"
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    for href in re.findall(r"href=[\"']([^\"'#]+)[\"']", text):
        if not href.startswith(("http:", "https:", "data:")):
            assert (index.parent / href).is_file(), f"{href} is referenced but missing"
    return text


def test_expand_methods_and_specs():
    assert expand_methods(["visualmixer:0.3,0.5", "noise:0.1", "clean"]) == [
        "visualmixer:0.3",
        "visualmixer:0.5",
        "noise:0.1",
        "clean",
    ]
    p = Protector("visualmixer:0.4/r8/flat")
    assert (p.tau, p.region, p.channel_order) == (0.4, 8, False)
    with pytest.raises(ValueError, match="target VFE"):
        Protector("visualmixer:1.5")
    with pytest.raises(ValueError, match="unknown method"):
        Protector("rot13")


def test_tiny_audit_renders(tmp_path):
    cfg = AuditConfig(
        datasets=("faces",),
        methods=("visualmixer:0.5", "pixelate:4", "scramble:4"),
        n_victims=16,
        n_attacker=32,
        epochs=1,
        a3_epochs=1,
        a3_base=4,
        width=8,
        n_faces=1,
        examples=2,
        progress=False,
    )
    index = audit(tmp_path / "audit", cfg, log=lambda s: None)
    text = check_page(index)
    assert "privacy" in text and "visualmixer:0.5" in text and "prior: class mean image" in text
    res = json.loads((tmp_path / "audit" / "results.json").read_text())
    ds = res["datasets"]["faces"]
    assert set(ds["methods"]) == {"clean", "visualmixer:0.5", "pixelate:4", "scramble:4"}
    for r in ds["methods"].values():
        assert "error" not in r, r.get("error")
        assert {"A1", "A2", "A3", "A5"} <= set(r["attacks"])
        assert 0.0 <= r["accuracy"] <= 1.0 and "summary" in r and "goals_met" in r
    assert ds["methods"]["clean"]["attacks"]["A1"]["ssim"]["mean"] == pytest.approx(1.0)
    assert ds["prior"]["class_mean"]["ssim"]["mean"] > ds["prior"]["global_mean"]["ssim"]["mean"] - 0.05
    assert "faces" in res and res["faces"]["n_images"] >= 1
    pngs = list((tmp_path / "audit" / "img").glob("*.png"))
    assert len(pngs) == text.count('src="data:image/png')


def test_cli_audit(tmp_path, capsys):
    from visualmixer.cli import main

    out = tmp_path / "cli"
    rc = main(
        ["audit", "--out", str(out), "--data", "faces", "--methods", "pixelate:4", "--attacks", "A1,A2",
         "--victims", "8", "--attacker", "16", "--epochs", "1", "-q"]
    )  # fmt: skip
    assert rc == 0
    assert str(out / "index.html") in capsys.readouterr().out
    check_page(out / "index.html")
    rc = main(["audit", "--out", str(out), "--data", "faces", "--attacks", "A9", "-q"])
    assert rc == 2 and "unknown attacks" in capsys.readouterr().err
