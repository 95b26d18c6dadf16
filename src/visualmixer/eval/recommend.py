"""Which VisualMixer setting to use on *your* images: the cheapest one that meets a risk budget.

:func:`recommend` runs the audit (:mod:`visualmixer.eval.report.runner`: the same utility model,
attacks and prior-only guess) on a user's data set for a grid of settings — target VFE × region
side × protection variant (every VisualMixer option of the method registry but the region:
``flat``, ``blocks``, ``keyblocks``, ``online``; ``plain`` is none) — and picks the setting with
the lowest accuracy loss against the clean reference among those that meet the budget:

- ``max_ssim_over_prior``: the best attack's reconstruction SSIM, minus the prior-only guess's;
- ``max_reid``: the best attack's re-identification rate, in multiples of chance (1 / victims);
- ``max_face_rate``: the share of the built-in face photos in which a detector still finds a face
  (attack A6; only run when this limit is set).

Finished settings are written to ``out_dir/recommend.json`` (atomically) as they finish; running
the same call again picks them up. The data (a hash of the split images) and the audit settings
must match the saved ones; a changed budget only re-ranks the saved results.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shlex
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from visualmixer.core.atomic import replace_atomically
from visualmixer.core.regions import default_region
from visualmixer.eval import metrics as M
from visualmixer.eval.attacks.registry import registered_attacks, unscored_methods
from visualmixer.eval.methods import parse_method
from visualmixer.eval.methods.base import key_seed
from visualmixer.eval.methods.visualmixer import VM_OPTIONS
from visualmixer.eval.report.data import data_options, load_audit_data
from visualmixer.eval.report.files import prepare_out_dir
from visualmixer.eval.report.presets import QUICK, AuditConfig
from visualmixer.eval.userdata import fingerprint
from visualmixer.tools.progress import progress

__all__ = ["Budget", "VARIANTS", "STATE_FILE", "settings_grid", "recommend", "obfuscate_command",
           "format_recommendation", "unscored_settings"]

#: The protection variants of VisualMixer in the method registry ("plain": no option).
VARIANTS = ("plain",) + tuple(o[1:] for o in VM_OPTIONS if o not in ("/rN", "/cyclic"))  # cyclic: old releases only
STATE_FILE = "recommend.json"
_VERSION = 1
#: metric key in a setting's row -> (budget field, words for the report, short name, decimals)
_METRICS = {
    "ssim_over_prior": ("max_ssim_over_prior", "best reconstruction SSIM over the prior-only guess", "SSIM", 3),
    "reid_over_chance": ("max_reid", "re-identification (times chance)", "re-id", 1),
    "face_rate": ("max_face_rate", "face detection rate", "faces", 2),
}
#: why ``visualmixer obfuscate`` cannot make a variant (by option; others: it has no option for it)
_AUDIT_ONLY = {
    "blocks": "region permutation per image (/blocks) has no `visualmixer obfuscate` option",
    "keyblocks": "the key-wide region layout (/keyblocks) has no `visualmixer obfuscate` option",
    "online": "online re-keying is a training mode (`visualmixer train --mode online` or ObfuscatedDataset), "
              "not a release",
}


def _options(spec: str) -> list[str]:
    """The option words of a VisualMixer spec after the target (``"0.5/r8/flat"`` -> r8, flat)."""
    return [p for p in spec.partition(":")[2].split("/")[1:] if p]


def _obfuscate_can(option: str) -> bool:
    """Whether ``visualmixer obfuscate`` has a flag for this option (--region, --no-channel-order,
    --mix, --groups similar, --mix-share, --mix-balanced)."""
    return re.fullmatch(r"flat|similar|balanced|(r|mix)\d+|share[\d.]+", option) is not None


@dataclass(frozen=True)
class Budget:
    """The risk a setting may leave (None: not checked); see the module docstring."""

    max_ssim_over_prior: float | None = 0.05
    max_reid: float | None = 2.0
    max_face_rate: float | None = None

    def __post_init__(self):
        if all(v is None for v in asdict(self).values()):
            raise ValueError("the budget is empty: set max_ssim_over_prior=X, max_reid=X or max_face_rate=X")
        for k, v in asdict(self).items():
            if v is not None and (not math.isfinite(v) or v < 0):
                raise ValueError(f"{k}: must be a number >= 0, got {v}")
        if self.max_face_rate is not None and self.max_face_rate > 1:
            raise ValueError(f"max_face_rate: a share of face photos, in [0, 1], got {self.max_face_rate}")

    def reid_unmeasurable(self, n_victims: int) -> str | None:
        """Why ``max_reid`` can never be exceeded with ``n_victims`` victims (it is refused: it would
        pass any setting), or None when it can."""
        if self.max_reid is None or self.max_reid < n_victims:
            return None
        return (f"{self.max_reid:g} times chance can never be exceeded with {n_victims} victims (chance is 1/"
                f"{n_victims}: re-identifying every victim is {n_victims} times chance), so it would pass any setting")


def unscored_settings(attacks, specs, budget: Budget) -> str | None:
    """Why ``attacks`` cannot measure ``budget``'s SSIM or re-identification limit on some of
    ``specs`` (:func:`~visualmixer.eval.attacks.registry.unscored_methods`), or None."""
    limits = budget.max_ssim_over_prior is not None or budget.max_reid is not None
    return unscored_methods(attacks, {s: parse_method(s) for s in specs}) if limits else None


def settings_grid(targets=(0.3, 0.5, 0.7), regions=(None,), variants=("plain",)) -> list[str]:
    """Method specs ``visualmixer:T[/rR][/variant]`` for every combination (validated).

    ``regions`` holds region sides or None (the size rule); a variant is ``"plain"`` or options of
    the registry's VisualMixer spec (:data:`VARIANTS`, e.g. ``"blocks"``, ``"mix4/similar"``).
    """
    if not targets or not regions or not variants:
        raise ValueError("targets, regions and variants must each name at least one value")
    specs = []
    for t, r, v in itertools.product(targets, regions, variants):
        if not 0 <= float(t) <= 1:
            raise ValueError(f"targets: a target VFE must be in [0, 1], got {t}")
        if r is not None and int(r) < 1:
            raise ValueError(f"regions: a region side must be >= 1, got {r}")
        opts = ([f"r{int(r)}"] if r is not None else []) + ([v.strip("/")] if v != "plain" else [])
        spec = "visualmixer:" + "/".join([f"{float(t):g}", *opts])
        try:
            spec = parse_method(spec).spec  # validates; the registry's own spelling
        except ValueError as exc:
            raise ValueError(f"variants: {v!r} is not a VisualMixer variant ({exc}); choose from "
                             f"{', '.join(VARIANTS)}") from None
        specs.append(spec)
    return list(dict.fromkeys(specs))


# ----------------------------------------------------------------------------- state


def _identity(cfg: AuditConfig, data) -> dict:
    """What must match for saved results to be reused: the data and the audit settings."""
    keys = ("n_train", "n_victims", "n_attacker", "epochs", "a3_epochs", "a3_base", "width", "seed", "attacks",
            "face_detectors", "n_faces", "image_size", "image_column", "label_column")
    if cfg.utility_model is not None:  # (absent by default, so that earlier saved states still match)
        keys += ("utility_model",)
    sha = fingerprint(data.train_images, data.train_labels, data.victim_images, data.victim_labels,
                      data.attacker_images, data.attacker_labels)
    audit = {k: json.loads(json.dumps(getattr(cfg, k, None))) for k in keys}
    return {"data": data.name, "data_sha256": sha, "audit": audit}


def _load_state(path: Path, identity: dict, budget: Budget, *, overwrite: bool, log) -> dict:
    fresh = {"version": _VERSION, **identity, "budget": asdict(budget), "settings": {}}
    if overwrite or not path.exists():
        return fresh
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"out_dir: {path} cannot be read ({exc}); pass overwrite=True to start over") from None
    if state.get("data_sha256") != identity["data_sha256"]:
        raise ValueError(f"out_dir: {path} holds results for other data ({state.get('data')}, or the same "
                         "images split or sized differently); pass another out_dir=DIR or overwrite=True")
    saved, now = state.get("audit", {}), identity["audit"]
    if "A6" in (now.get("attacks") or []) and "A6" not in (saved.get("attacks") or []):
        raise ValueError(f"out_dir: {path} holds results made without a face budget: max_face_rate="
                         f"{budget.max_face_rate:g} needs attack A6 on every setting (overwrite=True redoes them)")
    if "A6" in (saved.get("attacks") or []) and "A6" not in (now.get("attacks") or []):  # a face budget dropped:
        saved = {**saved, "attacks": [a for a in saved["attacks"] if a != "A6"]}  # its A6 results go unused
    diff = [f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in dict.fromkeys([*now, *saved])
            if saved.get(k) != now.get(k)]  # (both ways: a setting only one of them names differs too)
    if diff:
        raise ValueError(f"out_dir: {path} holds results of other audit settings ({'; '.join(diff)}); run with the "
                         "same settings, or pass another out_dir=DIR or overwrite=True")
    if state.get("budget") != asdict(budget):
        log(f"[recommend] the budget changed since the saved run ({state.get('budget')} -> {asdict(budget)}): "
            "the finished settings are reused (the budget only picks among them)")
        state["budget"] = asdict(budget)
    done = [s for s in state["settings"] if "error" not in state["settings"][s]]
    if done:
        log(f"[recommend] resuming: {len(done)} finished settings read from {path}")
    return state


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, (json.dumps(state, indent=1) + "\n").encode(), mode=0o644, suffix=".tmp")


# ----------------------------------------------------------------------------- one setting


def _face_rate(record: dict | None) -> float | None:
    """Highest detection rate over detectors and views (A1/A2/A5) of one A6 record."""
    rates = [v for det in (record or {}).values() if isinstance(det, dict) for v in det.values()
             if isinstance(v, (int, float))]
    return max(rates) if rates else None


def _run_setting(cfg: AuditConfig, spec: str, data, ctx: dict) -> dict:
    """Audit one setting (the runner's per-method step, then the A6 face photos when selected)."""
    from visualmixer.eval.report.runner import _audit_faces, _audit_method, _summarise_method

    t0 = time.time()
    method = parse_method(spec, seed=key_seed(int(cfg.seed), f"audit-method:{spec}"))  # as the audit seeds it
    r, _ = _audit_method(cfg, method, data, ctx["prepared"], ctx["region"], ctx["attacks"])
    ref = ctx.get("reference_accuracy")
    if ref is not None and r.get("accuracy") is not None:
        r["accuracy_loss_pp"] = 100.0 * (ref - r["accuracy"])
    _summarise_method(r, ctx["ds_res"])
    if "A6" in ctx["attacks"]:
        fres, _ = _audit_faces(cfg, {spec: method}, frozenset({"A6"}), log=lambda s: None)
        r["A6"] = fres["methods"].get(spec)
        r["summary"]["face_rate"] = _face_rate(r["A6"])
    r["seconds"] = round(time.time() - t0, 1)
    return r


def _row(spec: str, r: dict, budget: Budget) -> dict:
    """A setting's numbers and budget checks: ``{"spec", metrics..., "fails": {metric: excess}}``."""
    s = r.get("summary", {})
    row = {"spec": spec, "accuracy": r.get("accuracy"), "accuracy_loss_pp": r.get("accuracy_loss_pp"),
           "seconds": r.get("seconds"), "fails": {}}
    for metric, (field_, *_) in _METRICS.items():
        row[metric] = s.get(metric)
        limit = getattr(budget, field_)
        if limit is None:
            continue
        v = row[metric]
        if v is None or v > limit:
            row["fails"][metric] = math.inf if v is None else v - limit
    return row


def _select(rows: list[dict], budget: Budget) -> dict:
    ok = [r for r in rows if not r["fails"] and r["accuracy_loss_pp"] is not None]
    best = min(ok, key=lambda r: (r["accuracy_loss_pp"], r["spec"])) if ok else None
    usable = [r for r in ok if obfuscate_command(r["spec"], src="SRC") is not None]
    best_cmd = min(usable, key=lambda r: (r["accuracy_loss_pp"], r["spec"])) if usable else None

    def distance(r):  # the worst miss, relative to its limit
        return max(ex / max(abs(getattr(budget, _METRICS[m][0])), 1e-3) for m, ex in r["fails"].items())

    missing = [r for r in rows if r["fails"]]
    closest = min(missing, key=lambda r: (distance(r), r["spec"])) if missing and not ok else None
    return {"best": best, "best_with_command": best_cmd, "closest": closest}


def _estimate(cfg: AuditConfig, data, todo: list[str], state: dict, ctx: dict) -> float:
    """Seconds the settings in ``todo`` will take: from finished ones when there are any, else a
    cost model from the pilot (the clean reference) plus a timed protection of the victims."""
    done = [v["seconds"] for s, v in state["settings"].items() if s != "clean" and "seconds" in v]
    if done:
        return sum(done) / len(done) * len(todo)
    ref = state["settings"].get("clean", {}).get("seconds", 0.0)
    t0 = time.time()
    parse_method(todo[0])(data.victim_images)
    per_image = (time.time() - t0) / max(1, len(data.victim_images))
    total = 0.0
    for spec in todo:
        online = parse_method(spec).utility == "online"
        n = len(data.train_images) * (cfg.epochs if online else 1) + len(data.victim_images)
        n += len(data.attacker_images) if "A3" in ctx["attacks"] else 0  # A3 protects the attacker's own
        total += ref + per_image * n
    return total


# ----------------------------------------------------------------------------- the search


def _setup(cfg: AuditConfig, data) -> dict:
    """What every setting shares: prepared attacks, the prior-only guess, the default region."""
    victims = data.victim_images
    n, _, h, w = victims.shape
    attacks = frozenset(cfg.attacks)
    prepared = {a.name: a.prepare(cfg, data) for a in registered_attacks(attacks, scope="victims")}
    prior = M.prior_scores(victims, data.victim_labels, data.attacker_images, data.attacker_labels,
                           num_classes=data.num_classes)
    ds_res = {"prior": prior, "chance_accuracy": 1.0 / data.num_classes, "reid_chance": 1.0 / n}
    return {"attacks": attacks, "prepared": prepared, "region": default_region(h, w), "ds_res": ds_res}


def recommend(data: str, *, out_dir, budget: Budget | None = None, targets=(0.3, 0.5, 0.7), regions=(None,),
              variants=("plain",), config: AuditConfig | None = None, overwrite: bool = False, log=print,
              on_setting_done=None) -> dict:
    """Audit a grid of settings on ``data`` and pick the cheapest that meets ``budget``.

    Parameters
    ----------
    data : str
        Any data set the audit accepts (``"imagefolder:PATH"``, ``"hf:PATH"``, ``"fashion-mnist"``...).
    out_dir : path-like
        Folder of ``recommend.json`` (the finished settings; resumed from).
    budget : Budget
        The risk limits (default :class:`Budget`).
    targets, regions, variants
        The grid (:func:`settings_grid`).
    config : AuditConfig
        Sizes, epochs, attacks, device (default ``QUICK``); its ``datasets`` and ``methods`` are
        ignored. A6 runs only with ``budget.max_face_rate``.
    overwrite : bool
        Ignore saved results.
    log : callable
        Receives one line per step.
    on_setting_done : callable, optional
        ``on_setting_done(spec, record)`` after each setting is saved.

    Returns
    -------
    dict
        ``{"data", "budget", "rows": [...], "best", "best_with_command", "closest", "reference",
        "shape", "state_file", "notes"}`` (:func:`format_recommendation` prints it).

    Raises
    ------
    ValueError
        Before any setting runs: a bad grid, attacks that cannot measure the budget
        (:func:`unscored_settings`), an ``out_dir`` that cannot be a folder, a ``max_reid`` that
        cannot fail, saved results of other data or settings.
    """
    budget = budget or Budget()
    specs = settings_grid(targets, regions, variants)
    cfg = replace(config or QUICK, datasets=(data,), methods=("clean", *specs), seeds=None, notes=[])
    attacks = tuple(a for a in cfg.attacks if a != "A6") + (("A6",) if budget.max_face_rate is not None else ())
    cfg = replace(cfg, attacks=attacks)
    why = unscored_settings(attacks, specs, budget)
    if why:
        raise ValueError(f"config.attacks: {why}")
    prepare_out_dir(out_dir)  # (a path that cannot be a folder fails before any setting runs)
    d = load_audit_data(data, n_train=cfg.n_train, n_victims=cfg.n_victims, n_attacker=cfg.n_attacker,
                        seed=cfg.seed, **data_options(cfg))
    why = budget.reid_unmeasurable(len(d.victim_images))
    if why:
        raise ValueError(f"max_reid: {why}; give max_reid=X with X < {len(d.victim_images)}, more victims "
                         "(n_victims=N; more images per class), or max_reid=None to leave re-identification unchecked")
    path = Path(out_dir) / STATE_FILE
    state = _load_state(path, _identity(cfg, d), budget, overwrite=overwrite, log=log)
    todo = [s for s in ["clean", *specs] if s not in state["settings"] or "error" in state["settings"][s]]
    ctx: dict = {}
    if todo:
        log(f"[recommend] {data}: {len(d.train_images)} training, {len(d.victim_images)} victims, "
            f"{len(d.attacker_images)} attacker images, {tuple(d.victim_images.shape[1:])}; "
            f"{len(specs)} settings + the clean reference")
        ctx = _setup(cfg, d)
    if "clean" in state["settings"]:
        ctx["reference_accuracy"] = state["settings"]["clean"].get("accuracy")
    old_threads = _set_threads(cfg.threads)
    try:
        bar = progress(total=len(todo), enabled=cfg.progress, desc="recommend", unit="setting")
        for i, spec in enumerate(todo):
            if spec != "clean" and i == (1 if todo[0] == "clean" else 0):
                est = _estimate(cfg, d, [s for s in todo if s != "clean"], state, ctx)
                log(f"[recommend] time estimate: about {_duration(est)} for {len(todo) - i} settings "
                    "(an estimate from the measured pilot; the real time varies with the machine's load)")
            if spec == "clean" and i == 0:
                log("[recommend] pilot: the clean reference (its time gives the estimate)")
            try:
                r = _run_setting(cfg, spec, d, ctx)
            except Exception as exc:  # one failing setting must not lose the others
                r = {"spec": spec, "error": f"{type(exc).__name__}: {exc}"}
                log(f"[recommend] {spec}: FAILED: {r['error']}")
            if spec == "clean":
                ctx["reference_accuracy"] = r.get("accuracy")
            state["settings"][spec] = r
            _save(path, state)
            bar.update(1)
            left = [s for s in todo[i + 1 :] if s != "clean"]
            eta = f"; about {_duration(_estimate(cfg, d, left, state, ctx))} left (estimate)" if left and i else ""
            log(f"[recommend] {spec}: done in {r.get('seconds')} s{eta}")
            if on_setting_done is not None:
                on_setting_done(spec, r)
        bar.close()
    finally:
        _set_threads(old_threads)
    return _result(state, specs, budget, d, cfg, path)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _set_threads(n):
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    return old


def _result(state: dict, specs: list[str], budget: Budget, d, cfg: AuditConfig, path: Path) -> dict:
    done = [s for s in specs if "error" not in state["settings"].get(s, {"error": 1})]
    rows = [_row(s, state["settings"][s], budget) for s in done]
    failed = {s: state["settings"][s]["error"] for s in specs if "error" in state["settings"].get(s, {})}
    ref, n = state["settings"].get("clean", {}), len(d.victim_images)
    coarse = [f"only {n} victims: re-identification chance is 1/{n}, so the re-identification numbers are coarse "
              "(more images per class, or n_victims=N larger, make them finer)"] if n < 30 else []
    return {"data": d.name, "budget": asdict(budget), "rows": rows, **_select(rows, budget),
            "reference": {"accuracy": ref.get("accuracy"), "error": ref.get("error")}, "failed": failed,
            "shape": list(d.victim_images.shape[1:]), "region": default_region(*d.victim_images.shape[2:]),
            "image_size": cfg.image_size, "state_file": str(path), "notes": list(d.notes) + coarse}


# ----------------------------------------------------------------------------- printing


def obfuscate_command(spec: str, *, src: str, dst: str = "DST", key: str = "secret/my.key") -> str | None:
    """The ``visualmixer obfuscate`` command for a setting, or None when the variant is audit-only."""
    m = parse_method(spec)
    if not all(_obfuscate_can(o) for o in _options(m.spec)):
        return None
    words = ["visualmixer", "obfuscate", src, dst, "--key", key, "--target-vfe", f"{m.tau:g}"]
    if m.region:
        words += ["--region", str(m.region)]
    if not m.channel_order:
        words.append("--no-channel-order")
    if m.mix is not None:  # SRC: one sub-folder per class
        words += ["--mix", str(m.mix)] + (["--groups", "similar"] if m.similar else [])
        words += ["--mix-share", f"{m.share:g}"] if m.share != 1 else []
        words += ["--mix-balanced"] if m.balanced else []
    return shlex.join(words)


def _hf_line(spec: str, path: str) -> str:
    m = parse_method(spec)
    opts = [f"target_vfe={m.tau:g}"] + ([f"region={m.region}"] if m.region else [])
    opts += ["channel_order=False"] if not m.channel_order else []
    return (f"obfuscate_hf(datasets.load_from_disk({path!r}), Key.load('secret/my.key'), {', '.join(opts)})"
            "   # from visualmixer.data.hf import obfuscate_hf; from visualmixer import Key")


def _audit_only(spec: str) -> str:
    why = []
    for o in _options(spec):
        if not _obfuscate_can(o):
            why.append(_AUDIT_ONLY.get(o, f"/{o} has no `visualmixer obfuscate` option"))
    return "; ".join(dict.fromkeys(why))


def _fmt(v, nd=3):
    return "n/a" if v is None else f"{v:.{nd}f}"


def _table(res: dict) -> list[str]:
    lines = [f"  {'setting':32} {'acc. loss pp':>12} {'SSIM-prior':>10} {'re-id x':>8} {'faces':>6}  budget"]
    for r in sorted(res["rows"], key=lambda r: (r["accuracy_loss_pp"] is None, r["accuracy_loss_pp"] or 0)):
        verdict = "meets" if not r["fails"] else "misses " + ", ".join(_METRICS[m][2] for m in r["fails"])
        lines.append(f"  {r['spec']:32} {_fmt(r['accuracy_loss_pp'], 1):>12} {_fmt(r['ssim_over_prior']):>10} "
                     f"{_fmt(r['reid_over_chance'], 1):>8} {_fmt(r['face_rate'], 2):>6}  {verdict}")
    return lines


def _how(res: dict, spec: str) -> list[str]:
    data = res["data"]
    kind, _, path = data.partition(":")
    cmd = obfuscate_command(spec, src=path if kind == "imagefolder" else "SRC")
    if cmd is None:
        return [f"  audit-only: {_audit_only(spec)}."]
    out = ["  visualmixer keygen secret/my.key", f"  {cmd}"]
    method = parse_method(spec)
    if kind == "hf" and method.mix is None:
        out = [f"  {_hf_line(spec, path)}", "  (or, for a folder of the same images:)", *out]
    elif kind == "hf":  # mixing protects a labelled set as a whole, from class folders
        out = ["  (mixing reads one sub-folder per class: save the images as SRC/<label>/<name>.png first)", *out]
    if res.get("image_size") and method.region is None:
        out.append(f"  note: the audit worked at {res['image_size']}x{res['image_size']} px, where the size rule "
                   f"gives --region {res['region']}; on larger originals the size rule picks larger regions. "
                   "The numbers hold for images of the audited size.")
    return out


def format_recommendation(res: dict) -> str:
    """The terminal report of :func:`recommend`: the table, the verdict and the command."""
    b = {k: v for k, v in res["budget"].items() if v is not None}
    lines = [f"Settings audited on {res['data']} ({'x'.join(map(str, res['shape']))}), clean accuracy "
             f"{_fmt(res['reference']['accuracy'])}; budget: "
             + ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in b.items()),
             *_table(res)]
    lines += [f"  {s}: FAILED ({e})" for s, e in res["failed"].items()]
    if res["reference"].get("error"):
        lines.append(f"The clean reference failed ({res['reference']['error']}): no accuracy loss can be measured.")
    best, closest = res["best"], res["closest"]
    if best is not None:
        lines.append(f"Recommended: {best['spec']} — the lowest accuracy loss ({_fmt(best['accuracy_loss_pp'], 1)} pp) "
                     "among the settings that meet the budget.")
        lines += _how(res, best["spec"])
        alt = res["best_with_command"]
        if obfuscate_command(best["spec"], src="SRC") is None and alt is not None:
            lines.append(f"Cheapest setting with an obfuscate command: {alt['spec']} "
                         f"({_fmt(alt['accuracy_loss_pp'], 1)} pp):")
            lines += _how(res, alt["spec"])
    elif closest is not None:
        misses = "; ".join(
            f"{_METRICS[m][1]} {_fmt(closest[m], _METRICS[m][3])} vs --{_METRICS[m][0].replace('_', '-')} "
            f"{res['budget'][_METRICS[m][0]]:g}"
            + ("" if math.isinf(ex) else f" (over by {_fmt(ex, _METRICS[m][3])})")
            for m, ex in closest["fails"].items())
        lines.append(f"No setting meets the budget. Closest: {closest['spec']}, which misses it on {misses}. "
                     "Try higher --targets, larger --regions, or a looser budget.")
    else:
        lines.append("No setting could be audited (see the failures above).")
    lines += [f"note: {n}" for n in res["notes"]]
    lines.append(f"(results of every setting: {res['state_file']})")
    return "\n".join(lines)
