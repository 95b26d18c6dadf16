"""merge_runs: audits of one seed on the same data, run a few methods at a time, as one result."""

import pytest

from visualmixer.eval.report.seeds import merge_runs


def _run(methods, seed=0, n_attacker=100, seconds=1.0):
    data = dict(n_train=10, n_victims=5, n_attacker=n_attacker, shape=[1, 8, 8], region=4, seconds=seconds,
                methods={m: {"spec": m} for m in methods})
    return {"config": {"seed": seed}, "datasets": {"fm": data}}


def test_methods_in_order_first_row_kept_dpsgd_last_and_inputs_untouched():
    a = _run(["clean", "dpsgd:1.0", "visualmixer:0.5"])
    b = _run(["clean", "pixelate:4"], seconds=2.0)
    b["datasets"]["fm"]["methods"]["clean"]["spec"] = "second clean"
    merged = merge_runs([a, b], ["a", "b"])
    assert list(merged["datasets"]["fm"]["methods"]) == ["clean", "visualmixer:0.5", "pixelate:4", "dpsgd:1.0"]
    assert merged["datasets"]["fm"]["methods"]["clean"]["spec"] == "clean"
    assert merged["datasets"]["fm"]["seconds"] == 3.0
    assert merged["merged_from"] == ["a", "b"]
    assert list(a["datasets"]["fm"]["methods"]) == ["clean", "dpsgd:1.0", "visualmixer:0.5"]


@pytest.mark.parametrize("other, match", [(_run(["x"], seed=1), "seed 1, not 0"),
                                          (_run(["x"], n_attacker=7), "n_attacker is 7, not 100")])
def test_runs_on_other_data_are_refused(other, match):
    with pytest.raises(ValueError, match=match):
        merge_runs([_run(["clean"]), other], ["a", "b"])


def test_replace_takes_later_rows_in_place_but_keeps_the_first_clean():
    a = _run(["clean", "visualmixer:0.5", "pixelate:4"])
    b = _run(["clean", "pixelate:4", "noise:0.3"])
    for run, tag in ((a, "a"), (b, "b")):
        for row in run["datasets"]["fm"]["methods"].values():
            row["from"] = tag
    merged = merge_runs([a, b], ["a", "b"], replace=True)["datasets"]["fm"]["methods"]
    assert list(merged) == ["clean", "visualmixer:0.5", "pixelate:4", "noise:0.3"]
    assert [row["from"] for row in merged.values()] == ["a", "a", "b", "b"]
    merged["pixelate:4"]["from"] = "changed"
    assert b["datasets"]["fm"]["methods"]["pixelate:4"]["from"] == "b"  # rows are copies
