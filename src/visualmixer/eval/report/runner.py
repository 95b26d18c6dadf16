"""The audit runner: every registered method through every selected registered attack.

For each data set (:mod:`visualmixer.eval.report.data`) and each method spec
(:func:`visualmixer.eval.methods.parse_method`):

- **utility** (:mod:`visualmixer.eval.report.utility`): a classifier trained on the owner's
  protected training images and tested on the protected victims, against the same model, epochs
  and seed on clean images;
- **privacy**: the selected attacks (:mod:`visualmixer.eval.attacks.registry`, run in registration
  order) give estimates of the victims' originals, scored by SSIM, PSNR, MS-SSIM (size allowing)
  and re-identification against the gallery of all victims' originals; attacks may add findings
  of their own (A4's accuracies); attacks of scope ``"faces"`` (A6) run on face photos;
- **prior-only guess**: the same scores for the mean attacker image of the victim's class and the
  global mean image, beside every score.

The result is a JSON-safe dict; :func:`visualmixer.eval.report.html.render_report` turns it into
``index.html``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace

import torch

from visualmixer.core.regions import default_region
from visualmixer.core.vfe import vfe
from visualmixer.eval import metrics as M
from visualmixer.eval.attacks.registry import AttackContext, attack_names, registered_attacks
from visualmixer.eval.methods import expand_methods, parse_method
from visualmixer.eval.methods.base import key_seed
from visualmixer.eval.report.presets import GOALS, AuditConfig
from visualmixer.eval.report.seeds import aggregate_seeds
from visualmixer.eval.report.train_results import attach_train_utility
from visualmixer.eval.report.utility import ONE_RELEASE, measure_utility
from visualmixer.eval.report.verdict import judge_results
from visualmixer.tools.progress import progress
from visualmixer.train.models import MODELS

__all__ = ["run_audit", "audit_methods"]

#: estimates scored but not shown in the picture grids
NOT_PICTURED = ("A1", "A5-grey")


def _clean_json(obj):
    if isinstance(obj, dict):
        return {k: _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _clean_json(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def audit_methods(cfg: AuditConfig) -> dict:
    """``{spec: method}`` for ``cfg.methods`` expanded, ``clean`` first when missing, plus the DP-SGD
    row with ``cfg.dpsgd`` (a note instead when opacus is missing). Validates every spec.

    Every method is seeded from ``cfg.seed`` and its spec, so the same seed gives the same numbers;
    the attacker's copies get seeds of their own (:meth:`ProtectionMethod.attacker_copy`). Real
    deployments (no seed) keep fresh OS randomness or their key."""
    specs = expand_methods(cfg.methods)
    if "clean" not in specs:
        specs = ["clean"] + specs
    if cfg.dpsgd and not any(s.startswith("dpsgd") for s in specs):
        try:
            import opacus  # noqa: F401

            specs.append("dpsgd:1.0")
        except ImportError:
            cfg.notes.append("DP-SGD row skipped: opacus is not installed (pip install 'visualmixer[dp]').")
    # seeded from the audit's seed (repeatable: same seed, same numbers); each method its own stream
    return {s: parse_method(s, seed=key_seed(int(cfg.seed), f"audit-method:{s}")) for s in specs}


def _check_attacks(cfg: AuditConfig) -> frozenset:
    names = attack_names()
    unknown = [a for a in cfg.attacks if a not in names]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; choose from {', '.join(names)} or 'all'")
    return frozenset(cfg.attacks)


def _check_utility_model(cfg: AuditConfig) -> None:
    if cfg.utility_model is not None and cfg.utility_model not in MODELS:
        raise ValueError(f"utility_model must be None (the audit's CNN) or one of {', '.join(MODELS)}; "
                         f"got {cfg.utility_model!r}")


def _run_audit(cfg: AuditConfig, *, log=print) -> tuple[dict, dict]:
    """Run the audit for one seed; returns ``(results, pictures)``.

    ``results`` is JSON-safe: per data set, the prior-only scores and, per method, utility, VFE
    and every attack's scores. ``pictures`` holds uint8 image tensors for the report grids:
    ``pictures[dataset][method] = {"original", "protected", "A2", "A3", "A5", ...}`` (``examples``
    victims each) and ``pictures["faces"][method]`` for A6.
    """
    attacks = _check_attacks(cfg)
    _check_utility_model(cfg)
    methods = audit_methods(cfg)
    t_start = time.time()
    results: dict = {"config": _clean_json(asdict(cfg)), "datasets": {}, "goals": GOALS}
    pictures: dict = {}
    for ds in cfg.datasets:
        results["datasets"][ds], pictures[ds] = _audit_dataset(cfg, ds, methods, attacks, log=log)
    if registered_attacks(attacks, scope="faces"):
        results["faces"], pictures["faces"] = _audit_faces(cfg, methods, attacks, log=log)
    results["seconds"] = round(time.time() - t_start, 1)
    results["notes"] = list(cfg.notes)
    return _clean_json(results), pictures


def _audit_dataset(cfg: AuditConfig, ds: str, methods: dict, attacks: frozenset, *, log) -> tuple[dict, dict]:
    """Every method on one data set: ``(dataset result, pictures)``."""
    from visualmixer.eval.report.data import data_options, load_audit_data

    t0 = time.time()
    data = load_audit_data(ds, n_train=cfg.n_train, n_victims=cfg.n_victims, n_attacker=cfg.n_attacker, seed=cfg.seed,
                           **data_options(cfg))
    cfg.notes.extend(n for n in data.notes if n not in cfg.notes)
    victims = data.victim_images
    n, c, h, w = victims.shape
    log(f"[audit] {ds}: {len(data.train_images)} training, {n} victims, "
        f"{len(data.attacker_images)} attacker images, {h}x{w}x{c}")
    region = default_region(h, w)
    k = data.num_classes
    prepared = {a.name: a.prepare(cfg, data) for a in registered_attacks(attacks, scope="victims")}
    prior = M.prior_scores(victims, data.victim_labels, data.attacker_images, data.attacker_labels, num_classes=k)
    ds_res: dict = {
        "n_train": len(data.train_images),
        "n_victims": n,
        "n_attacker": len(data.attacker_images),
        "shape": [c, h, w],
        "region": region,
        "num_classes": k,
        "chance_accuracy": 1.0 / k,
        "reid_chance": 1.0 / n,
        "utility_model": cfg.utility_model or "audit CNN",
        "prior": prior,
        "methods": {},
    }
    pics: dict = {}
    for spec in progress(methods, enabled=cfg.progress, desc=ds):
        method, tm = methods[spec], time.time()
        try:
            r, pic = _audit_method(cfg, method, data, prepared, region, attacks)
        except Exception as exc:  # one failing method must not lose the others' results
            r, pic = {"kind": method.name, "error": f"{type(exc).__name__}: {exc}"}, None
            log(f"[audit] {ds} {spec}: FAILED: {r['error']}")
        r["spec"] = spec
        r["seconds"] = round(time.time() - tm, 1)
        ds_res["methods"][spec] = r
        if pic is not None:
            pics[spec] = pic
        log(f"[audit] {ds} {spec}: utility accuracy {r.get('accuracy')} ({ds_res['utility_model']} trained on this method's training images, tested on its victims), {r['seconds']} s")  # noqa: E501
    _compare_with_reference(ds_res, methods)
    ds_res["seconds"] = round(time.time() - t0, 1)
    return ds_res, pics


def _compare_with_reference(ds_res: dict, methods: dict) -> None:
    """Accuracy loss against the reference (clean) row, then the summaries and goal checks."""
    refs = [ds_res["methods"][s].get("accuracy") for s, m in methods.items() if m.reference]
    ref_acc = refs[-1] if refs else None
    for r in ds_res["methods"].values():
        if ref_acc is not None and r.get("accuracy") is not None:
            r["accuracy_loss_pp"] = 100.0 * (ref_acc - r["accuracy"])
        if "attacks" in r:
            _summarise_method(r, ds_res)


def _audit_method(cfg: AuditConfig, method, data, prepared: dict | None, region: int,
                  attacks) -> tuple[dict, dict]:
    """Utility, VFE and every selected attack for one method on one data set.

    ``method`` is called as ``method(images)`` for every protection (the training set once for
    offline utility, before the victims' release), ``prepared`` maps attack names to what their
    ``prepare`` returned for this data set, ``attacks`` is the set of selected attack names.
    """
    victims = data.victim_images
    r: dict = {"spec": method.spec, "kind": method.name}
    train_release = None
    if method.utility in ONE_RELEASE:
        train_release = (method.protect_set(data.train_images, data.train_labels) if method.protects_sets
                         else method(data.train_images))
    method.reset_records()
    if method.protects_sets:
        # the victims are part of a released training set (protected as a whole); test images are
        # protected one by one, as in deployment; estimates are scored against each collage's main source
        releases = ()
        if "A10" in attacks and getattr(method, "online", False):  # an attacker who sees several epochs
            protected, *releases = method.protect_releases(victims, data.victim_labels, cfg.a10_releases)
        else:
            protected = method.protect_set(victims, data.victim_labels)
        truth_index, sources = method.last_main, method.last_sources  # (before the utility runs protect more)
        r["mix_sources"] = _source_shares(sources)
        tied = (f"{method.spec}: most collages have no main source (no source holds more of their regions than "
                "another); the tie goes to the smallest index, so one victim is the main source of many "
                "collages and main-source hits come in lumps: read the any-source scores beside them.")
        if r["mix_sources"]["main_tied"] >= 0.5 and tied not in cfg.notes:
            cfg.notes.append(tied)
        r.update(method.records(victims.shape[2], victims.shape[3]))
        r.update(measure_utility(cfg, method, data, method(victims), train_release))
    else:
        protected, truth_index, releases, sources = method(victims), None, (), None
        r.update(method.records(victims.shape[2], victims.shape[3]))
        r.update(measure_utility(cfg, method, data, protected, train_release))
    r["receiver_vfe"] = M.summarize(vfe(protected))
    ctx = AttackContext(
        method=method, protected=protected, region=method.region or region,  # public: the attacker knows it
        labels=data.victim_labels, attacker_images=data.attacker_images, attacker_labels=data.attacker_labels,
        num_classes=data.num_classes, settings=cfg, selected=frozenset(attacks), record=r,
        held_originals=victims, sources=sources,
        releases=tuple(releases) or None,
    )
    for attack in registered_attacks(attacks, scope="victims"):
        ctx.state = (prepared or {}).get(attack.name)
        if attack.can_run(ctx):
            ctx.estimates.update(attack.run(ctx))
    truth = victims if truth_index is None else victims[truth_index]
    if sources is not None:  # the prior-only guess (class mean), scored as generously: against its closest source
        guess = M.prior_guess(data.victim_labels, M.class_mean_images(data.attacker_images, data.attacker_labels,
                                                                       data.num_classes))
        r["prior_any_source"] = M.image_scores(truth, guess, gallery=victims, targets=truth_index,
                                               sources=sources)["any_source"]
    ex = min(cfg.examples, victims.shape[0])
    r["attacks"], pic = {}, {"original": truth[:ex], "protected": protected[:ex]}
    for a, e in ctx.estimates.items():
        index = ctx.targets.get(a, truth_index)  # the victim each estimate reconstructs
        target = truth if index is truth_index else victims[index]
        # a collage is also scored against whichever of its sources the estimate is closest to
        every = sources if index is truth_index else None
        r["attacks"][a] = M.image_scores(target, e, gallery=None if index is None else victims, targets=index,
                                         sources=every)
        if a in NOT_PICTURED:
            continue
        if index is not truth_index:  # it reconstructs other originals than the main sources: show those
            pic[f"{a} target"] = target[:ex]
        pic[a] = e[:ex]
    return r, pic


def _source_shares(sources: torch.Tensor) -> dict:
    """How many originals a mixed image draws on: mean share of its regions from its main source,
    mean number of distinct sources, and the share of collages whose main source is a tie (no
    source holds more of their regions than another: ``torch.mode`` then takes the smallest index)."""
    ordered = torch.sort(sources, dim=1).values
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered.diff(dim=1).ne(0)
    # regions per source of each collage (runs past the last source are 0); the longest is the main source's
    runs = torch.zeros_like(ordered).scatter_add_(1, starts.cumsum(dim=1) - 1, torch.ones_like(ordered))
    most = runs.amax(dim=1, keepdim=True)
    return {"main_share": float((most.double() / sources.shape[1]).mean()),
            "distinct_sources": float(starts.sum(dim=1).double().mean()),
            "main_tied": float(((runs == most).sum(dim=1) > 1).double().mean())}


def _audit_faces(cfg: AuditConfig, methods: dict, attacks: frozenset, *, log) -> tuple[dict, dict]:
    """The face-photo attacks (scope ``"faces"``, A6) for every method that releases new pixels
    (and the clean reference)."""
    from visualmixer.eval.report.data import face_images

    t0 = time.time()
    faces = face_images(128, cfg.n_faces)
    region = default_region(faces.shape[2], faces.shape[3])
    fres: dict = {"n_images": int(faces.shape[0]), "methods": {}}
    fpics: dict = {}
    for spec in progress(methods, enabled=cfg.progress, desc="A6 faces"):
        method = methods[spec]
        if not (method.changes_pixels or method.reference):
            continue  # the release is the clean photos: the clean row says it
        try:
            protected = method(faces)
            ctx = AttackContext(method=method, protected=protected, region=method.region or region,
                                settings=cfg, selected=attacks)
            for attack in registered_attacks(attacks, scope="faces"):
                if attack.can_run(ctx):
                    ctx.estimates.update(attack.run(ctx))
        except Exception as exc:  # keep the other methods' results
            fres["methods"][spec] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"[audit] A6 {spec}: FAILED: {fres['methods'][spec]['error']}")
            continue
        fres["methods"][spec] = ctx.record
        fpics[spec] = {"original": faces[:4], "protected": protected[:4]}
        fpics[spec].update({v: im[:4] for v, im in ctx.estimates.items()})
    fres["seconds"] = round(time.time() - t0, 1)
    log(f"[audit] A6 faces: {fres['seconds']} s")
    return fres, fpics


def _summarise_method(r: dict, ds_res: dict) -> None:
    """Best attack per score, and the goal checks (GOALS)."""
    atk = r.get("attacks", {})
    prior_ssim = ds_res["prior"]["class_mean"]["ssim"]["mean"]
    prior_reid = ds_res["prior"]["class_mean"].get("reid", {}).get("rate")
    best_ssim = max((s["ssim"]["mean"] for s in atk.values()), default=None)
    best_att = max(atk, key=lambda a: atk[a]["ssim"]["mean"]) if atk else None
    best_reid = max((s["reid"]["rate"] for s in atk.values() if "reid" in s), default=None)
    anys = [s["any_source"] for s in atk.values() if "any_source" in s]  # mixed releases only
    best_a4 = max(r["A4"].values()) if r.get("A4") else None
    chance = ds_res["chance_accuracy"]
    r["summary"] = s = {
        "best_ssim": best_ssim,
        "best_ssim_attack": best_att,
        "ssim_over_prior": None if best_ssim is None else best_ssim - prior_ssim,
        "best_reid": best_reid,
        # (rounded: (5/6) / (1/6) is 5.000000000000001, which a budget of 5 would call a miss)
        "reid_over_chance": None if best_reid is None else round(best_reid / ds_res["reid_chance"], 9),
        # the labels alone (the class-mean guess) re-identify up to classes/victims, above chance
        "reid_over_prior": (None if best_reid is None or not prior_reid else best_reid / prior_reid),
        # against any source of a collage (the attacker reconstructs whichever it can)
        "best_ssim_any_source": max((a["ssim"]["mean"] for a in anys), default=None),
        "best_reid_any_source": max((a["reid"] for a in anys if "reid" in a), default=None),
        "ssim_any_source_over_prior": (max(a["ssim"]["mean"] for a in anys) - r["prior_any_source"]["ssim"]["mean"]
                                       if anys and "prior_any_source" in r else None),
        "best_a4": best_a4,
        "a4_over_chance": None if best_a4 is None else best_a4 - chance,
        # A8: an attacker holding the files links them to the release (not a reconstruction)
        "link_rate": (r.get("A8") or {}).get("link_rate"),
        # ... and, the other way round, finds a released image that holds a piece of each file
        "victim_link_rate": (r.get("A8") or {}).get("victim_link_rate"),
        "membership_auc": (r.get("A8") or {}).get("membership_auc"),
    }
    r["goals_met"] = {
        "ssim": s["ssim_over_prior"] is not None and s["ssim_over_prior"] <= GOALS["ssim_over_prior"],
        "reid": s["reid_over_chance"] is not None and s["reid_over_chance"] <= GOALS["reid_over_chance"],
        "a4": s["a4_over_chance"] is not None and s["a4_over_chance"] <= GOALS["a4_over_chance"],
        "accuracy": r.get("accuracy_loss_pp") is not None and r["accuracy_loss_pp"] <= GOALS["acc_loss_pp"],
    }


def run_audit(cfg: AuditConfig | None = None, *, log=print) -> tuple[dict, dict]:
    """Run the audit for ``cfg.seeds`` (or ``cfg.seed``); returns ``(results, pictures)``.

    With several seeds the whole audit runs once per seed. The returned results keep the first
    seed's results in the single-seed layout, plus ``seeds``, ``per_seed`` (every seed's results,
    keyed by the seed as a string) and ``aggregate`` (:func:`~visualmixer.eval.report.seeds.aggregate_seeds`);
    the pictures are the first seed's. With ``cfg.train_results``, matching ``visualmixer train``
    runs add a ``train_utility`` entry to the methods
    (:func:`~visualmixer.eval.report.train_results.find_train_utility`). Sets torch's thread count
    to ``cfg.threads`` meanwhile.
    """
    cfg = cfg or AuditConfig()
    seeds = [int(s) for s in cfg.seeds] if cfg.seeds else [int(cfg.seed)]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    old = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    t0 = time.time()
    try:
        per_seed: list[tuple[int, dict]] = []
        pictures: dict = {}
        for i, sd in enumerate(seeds):
            if len(seeds) > 1:
                log(f"[audit] seed {sd} ({i + 1}/{len(seeds)})")
            res, pics = _run_audit(replace(cfg, seed=sd, seeds=None, notes=cfg.notes), log=log)
            per_seed.append((sd, res))
            if i == 0:
                pictures = pics
    finally:
        torch.set_num_threads(old)
    results = dict(per_seed[0][1])
    results["config"] = _clean_json(asdict(cfg))
    results["seeds"] = seeds
    if len(seeds) > 1:
        results["per_seed"] = {str(sd): res for sd, res in per_seed}
        results["seconds"] = round(time.time() - t0, 1)
    results["aggregate"] = aggregate_seeds([res for _, res in per_seed])
    results["notes"] = list(dict.fromkeys(cfg.notes))
    if cfg.train_results:
        attach_train_utility(results, cfg.train_results, log=log)
    judge_results(results)  # goals judged against the run's noise, beside the raw goals_met
    return _clean_json(results), pictures
