"""How to add a protection method and an attack: register them, audit them, find them in results.json.

This is the worked example behind docs/architecture.md's how-to: a toy method (invert the images)
and a toy attack (invert them back, knowing the method) go through the same audit as the built-in
ones.
"""

import json

import pytest
import torch

from visualmixer.eval.attacks import (
    Attack,
    attack_names,
    get_attack,
    register_attack,
    registered_attacks,
    unregister_attack,
)
from visualmixer.eval.methods import (
    METHODS,
    Param,
    ProtectionMethod,
    get_method,
    method_names,
    parse_method,
    register_method,
    unregister_method,
)
from visualmixer.eval.report import AuditConfig, audit
from visualmixer.eval.report.markdown import results_to_markdown


class Invert(ProtectionMethod):
    """``invert:LEVEL``: ``LEVEL - x`` (a toy; deterministic, so trivially undone)."""

    params = (Param("level", int, 255),)

    def validate(self):
        if not 0 <= self.level <= 255:
            raise ValueError(f"level must be in [0, 255], got {self.level}")

    def protect(self, images, *, ids=None, key=None):
        return (self.level - images.long()).clamp(0, 255).to(torch.uint8)


class UndoInvert(Attack):
    """A toy attack that knows the method: invert the release back."""

    name, title = "T1", "undo the inversion"
    needs = frozenset({"protected", "method"})

    def applies_to(self, method):
        return isinstance(method, Invert)

    def run(self, ctx):
        undone = (ctx.method.level - ctx.protected.long()).clamp(0, 255)
        ctx.record["toy_attack_ran"] = True
        return {"T1": undone.float() / 255}


@pytest.fixture
def toy_registrations():
    register_method("invert")(Invert)
    register_attack(UndoInvert)
    try:
        yield
    finally:
        unregister_method("invert")
        unregister_attack("T1")


def test_method_registry_round_trips_every_spec():
    for spec in ("clean", "visualmixer:0.5/r7/blocks", "visualmixer:0.3/flat/online", "noise:0.1", "dppix:1/8",
                 "blur:1.5", "pixelate:4", "scramble:4", "instahide:4", "dpsgd:1"):
        m = parse_method(spec)
        assert parse_method(m.spec).spec == m.spec and m.name == spec.split(":")[0]
        assert type(m) is get_method(m.name) is METHODS[m.name]
    with pytest.raises(ValueError, match="unknown method"):
        parse_method("rot13:1")
    with pytest.raises(ValueError, match="already registered"):
        register_method("noise")(Invert)


def test_attacker_copy_has_its_own_key():
    x = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for spec in ("scramble:4", "visualmixer:0.5/keyblocks"):
        owner = parse_method(spec)
        other = owner.attacker_copy()
        assert other is not owner and other.spec == owner.spec
        assert not torch.equal(owner(x), other(x)), spec


def test_toy_method_and_attack_through_the_audit(tmp_path, toy_registrations):
    assert "invert" in method_names() and "T1" in attack_names() and get_attack("T1").name == "T1"
    assert parse_method("invert:200").spec == "invert:200"
    with pytest.raises(ValueError, match="level"):
        parse_method("invert:300")
    assert registered_attacks(["T1"])[0].applies_to(parse_method("invert"))
    cfg = AuditConfig(
        datasets=("faces",),
        methods=("invert:255", "pixelate:4"),
        attacks=("A1", "A2", "T1"),
        n_victims=8,
        n_attacker=16,
        epochs=1,
        width=8,
        examples=2,
        progress=False,
    )
    audit(tmp_path / "audit", cfg, log=lambda s: None)
    res = json.loads((tmp_path / "audit" / "results.json").read_text())
    methods = res["datasets"]["faces"]["methods"]
    inv = methods["invert:255"]
    assert "error" not in inv, inv.get("error")
    assert inv["kind"] == "invert" and inv["toy_attack_ran"] is True
    assert {"A1", "A2", "T1"} == set(inv["attacks"])
    assert inv["attacks"]["T1"]["ssim"]["mean"] == pytest.approx(1.0)  # the toy attack undoes it exactly
    assert inv["attacks"]["A1"]["ssim"]["mean"] < 0.5
    assert "T1" not in methods["pixelate:4"]["attacks"]  # applies_to: only the inversion
    assert inv["summary"]["best_ssim_attack"] == "T1"
    md = results_to_markdown(res)
    assert "T1 SSIM" in md and "| invert:255 |" in md
