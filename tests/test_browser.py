"""The HTML reports as a person sees them: in a real headless browser (Chromium)."""

from browser import open_in_browser
from visualmixer.eval.report import AuditConfig, audit


def test_audit_report_loads_cleanly_in_a_browser(tmp_path):
    cfg = AuditConfig(datasets=("faces",), methods=("visualmixer:0.5", "pixelate:4"), n_victims=8, n_attacker=16,
                      epochs=1, a3_epochs=1, a3_base=4, width=8, n_faces=1, examples=2, progress=False)
    index = audit(tmp_path / "audit", cfg, log=lambda s: None)
    seen = open_in_browser(index, tmp_path / "shot.png")
    assert not seen["errors"], seen["errors"]
    assert not seen["failed"], seen["failed"]
    assert seen["images"] and all(i["ok"] for i in seen["images"]), [i for i in seen["images"] if not i["ok"]]
    assert seen["stddev"] > 10, "the screenshot is (nearly) blank"
    assert "visualmixer:0.5" in seen["text"]


def test_run_page_loads_cleanly_in_a_browser(tmp_path):
    """The `visualmixer run` page from small inputs: real photos at 32 px, a fabricated training
    summary, a tiny real quick audit; pictures decode, nothing fails, the verdict is on top."""
    from visualmixer.eval.report.runpage import photo_demo, photo_section, write_run_page
    from visualmixer.eval.report.runsections import audit_section, training_section

    out = tmp_path / "run"
    out.mkdir()
    photos = photo_demo(out, (0.3, 0.5, 0.7), size=32)
    summary = {"n_train": 200, "n_test": 100, "rows": [
        {"target_vfe": None, "train_vfe": None, "test_vfe": 0.45, "test_acc": 0.61, "loss_pp": None,
         "setup_obfuscate_s": 0.0, "epochs": [{"epoch": 1, "test_acc": 0.61, "epoch_s": 3.5}]},
        {"target_vfe": 0.5, "train_vfe": 0.52, "test_vfe": 0.51, "test_acc": 0.64, "loss_pp": -3.0,
         "setup_obfuscate_s": 27.6, "epochs": [{"epoch": 1, "test_acc": 0.64, "epoch_s": 3.6}]}]}
    cfg = AuditConfig(methods=("clean", "visualmixer:0.5", "pixelate:4"), n_train=40, n_victims=8, n_attacker=16,
                      epochs=1, a3_epochs=1, a3_base=4, width=4, n_faces=1, examples=2, progress=False)
    audit(out / "audit", cfg, log=lambda s: None)
    section, verdict, note = audit_section(out, out / "audit")
    page = write_run_page(out / "index.html", [photo_section(out, photos), training_section(out, summary), section],
                          verdict=verdict, notes=[note])
    seen = open_in_browser(page, tmp_path / "run.png")
    assert not seen["errors"], seen["errors"]
    assert not seen["failed"], seen["failed"]
    # 6 photos x (original + 3 targets), the privacy-utility plot, the reconstructions
    assert len(seen["images"]) >= 26
    assert all(i["ok"] for i in seen["images"]), [i for i in seen["images"] if not i["ok"]]
    assert seen["stddev"] > 10, "the screenshot is (nearly) blank"
    assert verdict.startswith("Privacy verdict for visualmixer:0.5") and verdict in seen["text"]
    assert seen["text"].index(verdict) < seen["text"].index("Photos obfuscated")  # at the top
    # the tiny-run 'loss' of -3.0 points is not shown as met
    assert "+3.00" not in seen["text"] and "-3.00 ± " in seen["text"].replace("\xa0", " ")
    assert "too small a run to judge" in seen["text"]
