import json

from visualmixer.cli import main


def test_run_photo_part_writes_grid_json_and_index(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--out", str(out), "--size", "64", "--targets", "0.3", "0.6",
               "--skip-train", "--skip-audit", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "astronaut" in printed and "restore bit-exact: True" in printed
    data = json.loads((out / "photos.json").read_text())
    assert data["restore_bit_exact"] is True
    for row in data["images"].values():
        assert row["0.3"] >= 0.3 and row["0.6"] >= 0.6
        assert row["original"] < row["0.6"]
    assert (out / "grid.png").stat().st_size > 10_000
    page = (out / "index.html").read_text()
    assert "grid.png" in page and "photos.json" in page


def test_run_rejects_bad_target(tmp_path, capsys):
    rc = main(["run", "--out", str(tmp_path), "--targets", "1.5", "--skip-train", "--skip-audit"])
    assert rc == 2
    assert "--targets" in capsys.readouterr().err
