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
