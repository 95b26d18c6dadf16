"""Whether a recorded folder run may be resumed with the settings of a new call: the same key,
source, permutation generator and options (every one that decides the output bytes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["check_resumable", "generator_version", "recorded_generator"]


def _param(name: str, value: Any) -> str:
    """``name=value`` as a library message writes it (the CLI turns it into a flag)."""
    return f"{name}={value!r}" if isinstance(value, str) else f"{name}={value}"


def check_resumable(man_path: Path, man: Any, new: dict) -> None:
    """Refuse to resume the run recorded in the manifest ``man`` with the settings ``new``.

    The message names each parameter that differs with its recorded and its new value, and the
    ways out (the recorded values, ``overwrite=True``, another destination). The run's
    permutation generator is :func:`recorded_generator`'s.
    """
    old = {**man.header, "generator": recorded_generator(man.header, man.done())}
    into = f"{man_path} records a run into {old.get('dst')}"
    ways = "pass overwrite=True to start over (every image is done again), or choose another DST"
    if old.get("key_fingerprint") != new["key_fingerprint"]:
        raise ValueError(f"{into} made with a different key (fingerprint "
                         f"{old.get('key_fingerprint')}); use that key to resume, or {ways}")
    if old.get("src") != new["src"]:
        raise ValueError(f"{into} from SRC {old.get('src')}, not {new['src']}; {ways}")
    if old.get("generator") != new["generator"]:
        raise ValueError(f"{into} made with permutation generator version {old.get('generator')} "
                         f"(this visualmixer uses {new['generator']}; outputs would mix); finish it "
                         f"with the release that started it, or {ways}")
    rec_opts = {**(old.get("options") or {}), "batch_size": old.get("batch_size")}
    new_opts = {**new["options"], "batch_size": new["batch_size"]}
    for opts in (rec_opts, new_opts):  # mixed runs record mix_share / mix_balanced only when set
        if opts.get("mix") is not None:
            opts.setdefault("mix_share", 1.0)
            opts.setdefault("mix_balanced", False)
    diffs = [n for n in sorted(set(rec_opts) | set(new_opts)) if rec_opts.get(n) != new_opts.get(n)]
    if diffs:
        recorded = ", ".join(_param(n, rec_opts.get(n)) for n in diffs)
        asked = ", ".join(_param(n, new_opts.get(n)) for n in diffs)
        raise ValueError(f"{into} made with {recorded}; this run asks for {asked}: rerun with "
                         f"{recorded} to resume it, {ways}")


def generator_version() -> int:
    """The core's permutation-generator version: the one whose plans a run writes."""
    from visualmixer.core.keyed import GENERATOR

    return int(GENERATOR)


def recorded_generator(header: dict, done: list[dict]) -> int:
    """The permutation generator of a recorded run.

    A header's value other than 1 is the run's. Headers written before this check worked said 1
    (or nothing) whatever generator made the plans: then the outputs' plans say it — with none
    recorded, nothing can mix, and the run counts as this release's; where they differ (they
    should not), the one that differs from this release's."""
    stated = int(header.get("generator", 1))
    if stated != 1:
        return stated
    made = {int(r["plan"].get("generator", 1)) for r in done if isinstance(r.get("plan"), dict)}
    return min(made - {generator_version()}, default=generator_version())
