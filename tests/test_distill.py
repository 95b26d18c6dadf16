"""Knowledge distillation on obfuscated data: loss, one step, a tiny end-to-end run and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from visualmixer.data.datasets import ImageSet
from visualmixer.train.distill import DistillConfig, TinyCNN, distill_loss, distill_step, run_distill
from visualmixer.train.models import SmallCNN


def _tiny_sets(n_train=48, n_test=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    def make(n):
        y = torch.arange(n) % 4
        x = torch.randint(0, 60, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
        for c in range(4):  # a learnable class signal: a bright quadrant per class
            r, q = divmod(c, 2)
            x[y == c, :, r * 8 : r * 8 + 8, q * 8 : q * 8 + 8] += 150
        return ImageSet(x, y, [f"c{i}" for i in range(4)])
    return make(n_train), make(n_test)


def test_distill_loss_properties():
    s = torch.randn(5, 10)
    assert float(distill_loss(s, s.clone(), None, 4.0)) == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(5, 10)
    assert float(distill_loss(s, t, None, 2.0)) > 0
    y = torch.randint(0, 10, (5,))
    mixed = distill_loss(s, t, y, 2.0, alpha=0.0)
    assert float(mixed) == pytest.approx(float(torch.nn.functional.cross_entropy(s, y)), rel=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        distill_loss(s, t, y, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        distill_loss(s, t, y, 1.0, alpha=1.5)


def test_distill_step_changes_student_not_teacher():
    import visualmixer as vm

    torch.manual_seed(0)
    teacher, student = SmallCNN(1, 10), TinyCNN(1, 10)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters()) / 10
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    xo = vm.obfuscate(x, key=vm.Key.from_seed(0), ids=list(range(8)), target_vfe=0.5).images
    assert not torch.equal(xo, x)
    xb = xo.float() / 255
    t0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    s0 = {k: v.clone() for k, v in student.state_dict().items()}
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    loss = distill_step(student, teacher, xb, torch.randint(0, 10, (8,)), opt, temperature=3.0)
    assert loss > 0
    assert any(not torch.equal(s0[k], v) for k, v in student.state_dict().items())
    assert all(torch.equal(t0[k], v) for k, v in teacher.state_dict().items())


def test_run_distill_tiny_obfuscated_and_clean(tmp_path):
    cfg = DistillConfig(target_vfe=0.5, compare_clean=True, teacher_epochs=2, student_epochs=2, batch_size=16,
                        lr=3e-3, seeds=[0], out=str(tmp_path))
    res = run_distill(cfg, sets=_tiny_sets())
    assert set(res["summary"]) == {"vfe0.5", "clean"}
    for r in res["runs"]:
        for m in ("teacher_acc", "student_kd_acc", "student_scratch_acc"):
            assert 0.0 <= r[m] <= 1.0
        assert r["student_params"] < r["teacher_params"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["summary"] == res["summary"]
    again = run_distill(DistillConfig(**{**cfg.__dict__, "out": None, "compare_clean": False}), sets=_tiny_sets())
    assert again["runs"][0]["student_kd_acc"] == res["runs"][0]["student_kd_acc"]  # seeded, reproducible


def test_cli_distill_validates_and_is_listed(capsys):
    from visualmixer.cli import build_parser, main

    assert "distill" in build_parser().format_help()
    assert main(["distill", "--temperature", "0", "--out", "/nonexistent/x"]) == 2
    assert "temperature" in capsys.readouterr().err


def test_an_out_that_is_a_file_is_refused_before_training(tmp_path, monkeypatch):
    from visualmixer.train import distill as D

    monkeypatch.setattr(D, "_one", lambda *a: pytest.fail("trained before checking out"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        D.run_distill(D.DistillConfig(out=str(tmp_path / "afile")), sets=(None, None))
