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
    # one styled page: the reports' CSS, the photos as a labelled picture table, no raw text tables
    assert "<style>" in page and "class='pics'" in page and "<pre>" not in page
    assert "<th>target 0.3</th>" in page and "achieved VFE" in page and "data:image/png;base64," in page
    assert sorted(p.name for p in (out / "photos").glob("astronaut-*.png")) == [
        "astronaut-original.png", "astronaut-vfe0.3.png", "astronaut-vfe0.6.png"]
    # the terminal ends with the verdict sentence shown at the top of the page
    last = printed.strip().splitlines()[-1]
    assert last == "No privacy verdict: the quick audit was skipped (--skip-audit)."
    assert f"<p class='verdict' id='verdict'>{last}</p>" in page


def test_run_rejects_bad_target(tmp_path, capsys):
    rc = main(["run", "--out", str(tmp_path), "--targets", "1.5", "--skip-train", "--skip-audit"])
    assert rc == 2
    assert "--targets" in capsys.readouterr().err


def test_run_help_is_plain_text(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert "``" not in text and ":mod:" not in text and ":func:" not in text
    assert "--out (default out/run)" in text


def test_run_page_library_helpers(tmp_path):
    """The photo grid, the table and the page are library functions (cli/run.py only calls them)."""
    from visualmixer.eval.report.runpage import RunSection, photo_table, write_run_page

    rows = {"cat": {"original": 0.15, "0.5": 0.52}}
    table = photo_table(rows, [0.5])
    assert table.splitlines()[2].split() == ["cat", "0.150", "0.520"]
    (tmp_path / "a.png").write_bytes(b"png")
    page = write_run_page(tmp_path / "index.html", [
        RunSection("Photos <1>", image="a.png", link="photos.json", text=table),
        RunSection("Missing picture", image="nope.png"),
    ])
    text = page.read_text()
    assert "Photos &lt;1&gt;" in text and "<img src='a.png'" in text and "nope.png" not in text
    assert "<pre>" in text and "href='photos.json'" in text
