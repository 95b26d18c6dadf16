"""The audit engine: every method through the same attacks and the same training (SPEC §8).

For each data set (:mod:`visualmixer.eval.report.data`) and each method spec (``"visualmixer:0.5"``,
``"noise:0.1"``, … see :func:`visualmixer.eval.baselines.make_method`):

- **utility**: a :class:`~visualmixer.eval.attacks.SmallCNN` trained on the owner's protected training
  images (offline mode: one protection per image) and tested on the protected victims, against the
  same model, epochs and seed on clean images;
- **privacy**: attacks A1, A2, A3, A5 give estimates of the victims' originals, scored by SSIM,
  PSNR, MS-SSIM (size allowing) and re-identification against the gallery of all victims'
  originals; A4 is a classifier trained on the attacker's clean images, applied to the protected
  images and to the A2/A3 estimates; A6 runs a face detector on protected face photos;
- **prior-only guess**: the same scores for the mean attacker image of the victim's class and the
  global mean image, beside every score.

The result is a JSON-safe dict; :func:`visualmixer.eval.report.html.render_report` turns it into
``index.html``.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from visualmixer.core.regions import default_region
from visualmixer.core.vfe import vfe
from visualmixer.eval import metrics as M
from visualmixer.eval.attacks import (
    LearnedInversion,
    Recognizer,
    direct_view,
    realign_and_solve,
    region_mosaic,
)

__all__ = [
    "AuditConfig",
    "Protector",
    "QUICK",
    "FULL",
    "FRONTIER",
    "run_audit",
    "expand_methods",
    "aggregate_seeds",
    "find_train_utility",
    "permute_regions",
    "ATTACKS",
    "GOALS",
]

ATTACKS = ("A1", "A2", "A3", "A4", "A5", "A6", "A7")

#: Issue-6 goals for the default target (see docs/privacy.md).
GOALS = {
    "ssim_over_prior": 0.05,  # best reconstruction SSIM no more than this above the prior-only guess
    "reid_over_chance": 2.0,  # re-identification at most this many times chance
    "face_rate": 0.05,  # faces still detected
    "a4_over_chance": 0.10,  # machine recognition within this of chance
    "acc_loss_pp": 2.35,  # accuracy cost in percentage points
}


@dataclass
class AuditConfig:
    """What to audit and how hard to try.

    Attributes
    ----------
    datasets : tuple of str
        From :data:`visualmixer.eval.report.data.AUDIT_DATASETS`.
    methods : tuple of str
        Method specs; ``"clean"`` (the utility reference) is added when missing.
    attacks : tuple of str
        Subset of ``ATTACKS``.
    n_train, n_victims, n_attacker : int
        Owner's training images, victims, attacker's own images per data set.
    epochs : int
        Epochs of the utility models and of the A4 classifier.
    a3_epochs : int
        Epochs of the A3 U-Net.
    a3_base : int
        A3 U-Net width.
    width : int
        Width of the utility / A4 :class:`~visualmixer.eval.attacks.SmallCNN`.
    device : str
        Where models train (``"cuda"`` on a GPU machine).
    seed : int
        Seeds data subsets, model initialisation and minibatch order (not the protections, which
        use fresh OS randomness like a real deployment).
    seeds : tuple of int, optional
        Run the whole audit once per seed (``seed`` is then ignored). ``results.json`` keeps the
        first seed's results in the usual places, every seed's results under ``per_seed`` and
        mean/sd/min/max/n over seeds under ``aggregate`` (see :func:`aggregate_seeds`).
    train_results : tuple of str
        Folders scanned recursively for ``metrics.json`` files of ``visualmixer train``; matching
        runs add a ``train_utility`` entry to VisualMixer methods (see :func:`find_train_utility`).
    face_detectors : tuple of str
        A6 detectors (``"haar"``, ``"mtcnn"``); unavailable ones are skipped with a note.
    n_faces : int
        LFW faces added to astronaut and Grace Hopper for A6.
    examples : int
        Victims shown in the image grids.
    dpsgd : bool
        Add the DP-SGD (Opacus) reference row when opacus is installed.
    progress : bool
        Show tqdm progress bars.
    threads : int or None
        torch intra-op threads during the audit (restored afterwards). Default 1: the small
        kernels here run tens of times slower with 2 threads on a machine whose cores are busy.
    """

    datasets: tuple[str, ...] = ("fashion-mnist",)
    methods: tuple[str, ...] = ("clean", "visualmixer:0.5", "noise:0.1", "blur:1.5", "pixelate:4", "scramble:4")
    attacks: tuple[str, ...] = ATTACKS
    n_train: int = 2000
    n_victims: int = 200
    n_attacker: int = 1200
    epochs: int = 2
    a3_epochs: int = 2
    a3_base: int = 12
    width: int = 16
    device: str = "cpu"
    seed: int = 0
    seeds: tuple[int, ...] | None = None
    train_results: tuple[str, ...] = ()
    face_detectors: tuple[str, ...] = ("haar",)
    n_faces: int = 6
    examples: int = 6
    dpsgd: bool = False
    progress: bool = True
    threads: int | None = 1
    notes: list[str] = field(default_factory=list)


QUICK = AuditConfig()
#: The configuration behind the tables in docs/privacy.md (about 35 minutes on 2 busy CPU cores).
FULL = AuditConfig(
    datasets=("fashion-mnist", "photos", "faces"),
    methods=(
        "clean",
        "visualmixer:0.3",
        "visualmixer:0.5",
        "visualmixer:0.7",
        "visualmixer:0.5/r7",
        "noise:0.1",
        "noise:0.3",
        "dppix:1",
        "blur:1.5",
        "pixelate:4",
        "scramble:4",
        "instahide:4",
    ),
    n_train=3000,
    n_victims=500,
    n_attacker=3000,
    epochs=3,
    a3_epochs=3,
    a3_base=16,
    width=16,
    face_detectors=("haar", "mtcnn"),
    n_faces=20,
    dpsgd=True,
)


#: The privacy-utility frontier on Fashion-MNIST: region size, region-level permutation per image
#: (``/blocks``) or per key (``/keyblocks``) and online re-keying (``/online``) against the
#: strongest baselines, three seeds.
FRONTIER = AuditConfig(
    datasets=("fashion-mnist",),
    methods=(
        "clean",
        "visualmixer:0.5",
        "visualmixer:0.5/r7",
        "visualmixer:0.5/r14",
        "visualmixer:0.5/blocks",
        "visualmixer:0.5/r7/blocks",
        "visualmixer:0.5/keyblocks",
        "visualmixer:0.5/r7/keyblocks",
        "visualmixer:0.5/online",
        "visualmixer:0.5/r7/online",
        "pixelate:4",
        "noise:0.3",
        "scramble:4",
    ),
    attacks=("A1", "A2", "A3", "A4", "A5", "A7"),
    n_train=3000,
    n_victims=500,
    n_attacker=3000,
    epochs=3,
    a3_epochs=3,
    a3_base=16,
    width=16,
    seeds=(0, 1, 2),
)


def expand_methods(specs) -> list[str]:
    """Expand ``"visualmixer:0.3,0.5"`` into ``["visualmixer:0.3", "visualmixer:0.5"]``."""
    out: list[str] = []
    for spec in specs:
        name, sep, params = spec.partition(":")
        if not sep or "," not in params:
            out.append(spec.strip())
            continue
        out.extend(f"{name.strip()}:{p.strip()}" for p in params.split(",") if p.strip())
    return out


VM_OPTIONS = ("/rN", "/flat", "/blocks", "/keyblocks", "/online")


def permute_regions(
    x: torch.Tensor, region: int, generator: torch.Generator | None = None, *, same_for_all: bool = False
) -> torch.Tensor:
    """Permute the whole ``region``×``region`` regions of each image among themselves.

    A fresh random permutation per image (from ``generator``); only the full regions of the grid
    take part, edge strips that are not a full region stay in place. Batched: no Python loop over
    images or regions.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, H, W)`` images, any dtype.
    region : int
        Region side.
    generator : torch.Generator, optional
        Source of the permutations (the global generator when None).
    same_for_all : bool
        One permutation for the whole batch (a key-wide scramble, as EtC block scrambling)
        instead of one per image.

    Returns
    -------
    torch.Tensor
        A new tensor of the same shape and dtype.
    """
    n, c, h, w = x.shape
    r = int(region)
    gh, gw = h // r, w // r
    out = x.clone()
    if n == 0 or gh * gw < 2:
        return out
    core = x[:, :, : gh * r, : gw * r].reshape(n, c, gh, r, gw, r)
    core = core.permute(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, c, r, r)
    rows = 1 if same_for_all else n
    perm = torch.argsort(torch.rand(rows, gh * gw, generator=generator), dim=1).expand(n, -1).to(x.device)
    core = core[torch.arange(n, device=x.device).unsqueeze(1), perm]
    core = core.reshape(n, gh, gw, c, r, r).permute(0, 3, 1, 4, 2, 5).reshape(n, c, gh * r, gw * r)
    out[:, :, : gh * r, : gw * r] = core
    return out


class Protector:
    """A method spec as a batch transform on uint8 ``(N, C, H, W)`` images (fresh randomness per call).

    ``"visualmixer:τ"`` calls :func:`visualmixer.obfuscate` and records the achieved VFE. Options,
    combinable: ``/rR`` region side R (default: the library's size rule), ``/flat`` switches the
    channel-order shuffle off, ``/blocks`` permutes the whole regions of each image after
    obfuscation (:func:`permute_regions`, a fresh permutation per image), ``/keyblocks`` permutes
    them with ONE permutation drawn per protector (a secret key-wide region scramble, like EtC
    block scrambling: a model can learn the fixed layout), ``/online`` trains the
    utility model on a fresh protection of the training images every epoch (online re-keying; the
    attacks still see one release). ``"dpsgd:σ"`` leaves the images clean (DP-SGD protects the
    model); anything else goes through :func:`visualmixer.eval.baselines.make_method`.
    """

    def __init__(self, spec: str):
        self.spec = spec
        name, _, param = spec.partition(":")
        self.kind = name.strip().lower()
        self.achieved_vfe: list[float] = []
        self.module = None
        self.blocks = False
        self.keyblocks = False
        self.online = False
        if self.kind == "visualmixer":
            parts = [p.strip() for p in param.split("/") if p.strip()]
            self.tau = float(parts[0]) if parts else 0.5
            self.region = None
            self.channel_order = True
            for p in parts[1:]:
                if p == "flat":
                    self.channel_order = False
                elif p == "blocks":
                    self.blocks = True
                elif p == "keyblocks":
                    self.keyblocks = True
                elif p == "online":
                    self.online = True
                elif p.startswith("r") and p[1:].isdigit() and int(p[1:]) >= 1:
                    self.region = int(p[1:])
                else:
                    raise ValueError(
                        f"bad visualmixer option {p!r} in {spec!r}; valid options: {', '.join(VM_OPTIONS)} "
                        "(e.g. visualmixer:0.5/r7/blocks)"
                    )
            if not 0 <= self.tau <= 1:
                raise ValueError(f"target VFE must be in [0, 1], got {self.tau} in {spec!r}")
            # fresh OS randomness for the region permutations, apart from torch's seeded generator
            self._gen = torch.Generator().manual_seed(secrets.randbits(63))
            self._region_key = secrets.randbits(63)  # /keyblocks: this protector's secret layout
            if self.blocks and self.keyblocks:
                raise ValueError(f"use /blocks or /keyblocks, not both, in {spec!r}")
        elif self.kind == "dpsgd":
            self.noise_multiplier = float(param or 1.0)
        else:
            from visualmixer.eval.baselines import make_method

            self.module = make_method(spec)

    def attacker_copy(self) -> Protector:
        """The same method with the attacker's OWN randomness and key (a new instance).

        A3 makes its training pairs with this: keyed methods (block scrambling, ``/keyblocks``)
        must not hand the victim's key to the attacker.
        """
        return Protector(self.spec)

    def region_for(self, height: int, width: int) -> int:
        """The region side ``obfuscate`` uses on ``height``×``width`` images."""
        return int(self.region) if getattr(self, "region", None) else default_region(height, width)

    def __call__(self, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        if self.kind == "visualmixer":
            from visualmixer.core.mixer import obfuscate

            outs = []
            for s in range(0, x.shape[0], chunk):
                res = obfuscate(
                    x[s : s + chunk], target_vfe=self.tau, region=self.region, channel_order=self.channel_order
                )
                self.achieved_vfe.extend(res.vfe.tolist())
                outs.append(res.images)
            out = torch.cat(outs)
            if self.blocks:
                out = permute_regions(out, self.region_for(x.shape[2], x.shape[3]), self._gen)
            elif self.keyblocks:
                g = torch.Generator().manual_seed(self._region_key)
                out = permute_regions(out, self.region_for(x.shape[2], x.shape[3]), g, same_for_all=True)
            return out
        if self.kind == "dpsgd":
            return x
        if self.kind == "instahide":  # mixes inside a batch: protect the whole set at once
            return self.module(x)
        return torch.cat([self.module(x[s : s + chunk]) for s in range(0, x.shape[0], chunk)])


def _bar(it, enabled, desc):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, leave=False)


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _clean_json(obj):
    if isinstance(obj, dict):
        return {k: _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _clean_json(obj.tolist())
    return _finite(obj)


def _dpsgd_utility(cfg: AuditConfig, data, noise_multiplier: float) -> tuple[float, float]:
    from torch.utils.data import DataLoader, TensorDataset

    from visualmixer.eval.attacks import SmallCNN
    from visualmixer.eval.baselines import dpsgd_train

    torch.manual_seed(cfg.seed)
    x = data.train_images.float() / 255
    loader = DataLoader(TensorDataset(x, data.train_labels), batch_size=128, shuffle=True)
    model = SmallCNN(x.shape[1], data.num_classes, cfg.width)
    model, eps = dpsgd_train(
        model, loader, epochs=cfg.epochs, noise_multiplier=noise_multiplier, device=cfg.device
    )
    model.eval()
    with torch.no_grad():
        pred = model(data.victim_images.float().to(cfg.device) / 255).argmax(1).cpu()
    return float((pred == data.victim_labels).double().mean()), eps


def fit_online(cfg: AuditConfig, num_classes: int, train_images, train_labels, protect) -> Recognizer:
    """Utility model with online re-keying: epoch ``e`` trains on ``protect(train_images)`` anew.

    The same :class:`~visualmixer.eval.attacks.Recognizer` schedule as the offline path (model, width,
    Adam, batch size, seed of initialisation and of the minibatch order, device, epochs), with
    one fresh protection of the whole training set per epoch. With ``protect`` the identity it
    trains exactly the model ``Recognizer.fit`` trains.
    """
    from torch.nn import functional as F

    from visualmixer.eval.attacks import SmallCNN
    from visualmixer.eval.attacks._train import batches, float_batch

    rec = Recognizer(num_classes, epochs=cfg.epochs, width=cfg.width, device=cfg.device, seed=cfg.seed)
    y = torch.as_tensor(train_labels, dtype=torch.long).reshape(-1)
    n = int(train_images.shape[0])
    if y.numel() != n:
        raise ValueError(f"train_labels must have {n} entries, got {y.numel()}")
    g = torch.Generator().manual_seed(rec.seed) if rec.seed is not None else None
    if rec.seed is not None:
        torch.manual_seed(rec.seed)
    model = SmallCNN(train_images.shape[1], rec.num_classes, rec.width).to(rec.device)
    opt = torch.optim.Adam(model.parameters(), lr=rec.lr)
    model.train()
    for _ in range(rec.epochs):
        x = protect(train_images)
        for idx in batches(n, rec.batch_size, g):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(float_batch(x[idx], rec.device)), y[idx].to(rec.device))
            loss.backward()
            opt.step()
    model.eval()
    rec.model = model
    return rec


def _faces_block(cfg: AuditConfig, prot: Protector, faces: torch.Tensor, estimates: bool) -> dict:
    from visualmixer.eval.attacks import detect_faces, haar_available, mtcnn_available

    out: dict = {}
    protected = prot(faces)
    views = {"A1": protected}
    if estimates:
        reg = getattr(prot, "region", None)
        views["A2"] = region_mosaic(protected, reg)
        # one pass from one start: 128-px photos have 64-256 tiles per region
        views["A5"] = realign_and_solve(protected, reg, passes=1, starts=1)
    for det in cfg.face_detectors:
        ok = haar_available() if det == "haar" else mtcnn_available()
        if not ok:
            out[det] = None
            continue
        out[det] = {}
        for view, imgs in views.items():
            boxes = detect_faces(imgs, detector=det)
            out[det][view] = sum(len(b) > 0 for b in boxes) / max(1, len(boxes))
    return {"rates": out, "protected": protected, "views": views}


def _audit_method(cfg: AuditConfig, prot: Protector, data, rec, region: int, attacks: set) -> tuple[dict, dict]:
    """Utility, VFE and every attack for one method on one data set."""
    victims = data.victim_images
    k = data.num_classes
    prot.achieved_vfe = []
    r: dict = {"spec": prot.spec, "kind": prot.kind}
    # utility: train on protected training images, test on protected victims
    online = getattr(prot, "online", False)
    prot_train = None if online else prot(data.train_images)  # online: a fresh protection per epoch
    prot.achieved_vfe = []
    prot_vic = prot(victims)
    if prot.kind == "visualmixer":
        r["achieved_vfe"] = M.summarize(prot.achieved_vfe)
        r["region"] = prot.region_for(victims.shape[2], victims.shape[3])
        r["blocks"] = bool(prot.blocks)
        r["keyblocks"] = bool(prot.keyblocks)
        r["online"] = bool(online)
        r["channel_order"] = bool(prot.channel_order)
    if prot.kind == "dpsgd":
        try:
            acc, eps = _dpsgd_utility(cfg, data, prot.noise_multiplier)
            r["accuracy"], r["epsilon"] = acc, eps
        except ImportError as exc:
            r["accuracy"], r["error"] = None, str(exc)
    elif getattr(prot, "online", False):
        util = fit_online(cfg, k, data.train_images, data.train_labels, prot)
        r["accuracy"] = util.accuracy(prot_vic, data.victim_labels)["accuracy"]
    else:
        util = Recognizer(k, epochs=cfg.epochs, width=cfg.width, device=cfg.device, seed=cfg.seed)
        util.fit(prot_train, data.train_labels)
        r["accuracy"] = util.accuracy(prot_vic, data.victim_labels)["accuracy"]
    r["receiver_vfe"] = M.summarize(vfe(prot_vic))
    est: dict[str, torch.Tensor] = {}
    reg = getattr(prot, "region", None) or region  # a public parameter: the attacker knows it
    if "A1" in attacks:
        est["A1"] = direct_view(prot_vic)
    if "A2" in attacks:
        est["A2"] = region_mosaic(prot_vic, reg)
    if "A5" in attacks:
        est["A5"] = realign_and_solve(prot_vic, reg)
        if victims.shape[1] == 3:  # luminance survives the per-region channel-order shuffle
            est["A5-grey"] = est["A5"].mean(dim=1, keepdim=True).expand_as(est["A5"]).contiguous()
            # and the channel order of each region, guessed with a colour prior fitted on the
            # attacker's own clean images (attacks.recover_channel_order)
            from visualmixer.eval.attacks import fit_channel_order_prior, recover_channel_order

            prior = fit_channel_order_prior(data.attacker_images, reg)
            est["A5-colour"] = recover_channel_order(est["A5"], reg, prior)
    if "A7" in attacks and prot.kind not in ("clean", "dpsgd"):
        # a key-wide block layout is recovered from the whole released set (labels leak), then
        # the region mosaic (and, for VisualMixer, the jigsaw) is read off the re-ordered images
        from visualmixer.eval.attacks import recover_layout, undo_layout

        blk = int(getattr(prot.module, "block", 0) or reg)
        src, neg = recover_layout(prot_vic, data.victim_labels, data.attacker_images, data.attacker_labels, blk,
                                  num_classes=k)
        ordered = undo_layout(prot_vic, src, neg, blk)
        est["A7"] = region_mosaic(ordered, blk)
        if prot.kind == "visualmixer" and "A5" in attacks and (prot.blocks or prot.keyblocks):
            est["A7+A5"] = realign_and_solve(ordered, reg)
    if "A3" in attacks:
        if prot.kind in ("clean", "dpsgd"):
            est["A3"] = direct_view(prot_vic)  # nothing to invert
        else:
            # the attacker's pairs use its own randomness and, for keyed methods, its own key
            inv = LearnedInversion(
                prot.attacker_copy(), epochs=cfg.a3_epochs, base=cfg.a3_base, device=cfg.device, seed=cfg.seed
            )
            inv.fit(data.attacker_images)
            est["A3"] = inv(prot_vic)
            r["a3_train_loss"] = inv.history
    r["attacks"] = {a: M.image_scores(victims, e) for a, e in est.items()}
    if rec is not None:
        a4 = {"protected": rec.accuracy(prot_vic, data.victim_labels)["accuracy"]}
        for a in ("A2", "A3", "A5", "A5-colour", "A7", "A7+A5"):
            if a in est:
                a4[a] = rec.accuracy(est[a], data.victim_labels)["accuracy"]
        r["A4"] = a4
    ex = min(cfg.examples, victims.shape[0])
    pic = {"original": victims[:ex], "protected": prot_vic[:ex]}
    pic.update({a: e[:ex] for a, e in est.items() if a not in ("A1", "A5-grey")})
    return r, pic


def run_audit(cfg: AuditConfig | None = None, *, log=print) -> tuple[dict, dict]:
    """Run the audit for ``cfg.seeds`` (or ``cfg.seed``); see :func:`_run_audit`.

    With several seeds the whole audit runs once per seed. The returned results keep the first
    seed's results in the single-seed layout, plus ``seeds``, ``per_seed`` (every seed's results,
    keyed by the seed as a string) and ``aggregate`` (:func:`aggregate_seeds`); the pictures are
    the first seed's. With ``cfg.train_results``, matching ``visualmixer train`` runs add a
    ``train_utility`` entry to the methods (:func:`find_train_utility`). Sets torch's thread count
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
            scfg = replace(cfg, seed=sd, seeds=None, notes=cfg.notes)
            res, pics = _run_audit(scfg, log=log)
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
    return _clean_json(results), pictures


# ---------------------------------------------------------------------------------------------
# several seeds


def _stats(values) -> dict:
    """``{"mean", "sd", "min", "max", "n"}`` of the non-None values (sample sd; 0 for one value)."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and not math.isfinite(v))]
    if not vals:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {
        "mean": statistics.fmean(vals),
        "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
    }


def _method_numbers(r: dict) -> dict:
    """The per-seed numbers of one method result that :func:`aggregate_seeds` summarises."""
    s = r.get("summary") or {}
    vfe = (r.get("achieved_vfe") or r.get("receiver_vfe") or {}).get("mean")
    return {
        "accuracy": r.get("accuracy"),
        "accuracy_loss_pp": r.get("accuracy_loss_pp"),
        "vfe": vfe,
        "ssim": {a: sc.get("ssim", {}).get("mean") for a, sc in (r.get("attacks") or {}).items()},
        "ssim_over_prior": s.get("ssim_over_prior"),
        "best_reid": s.get("best_reid"),
        "best_a4": s.get("best_a4"),
    }


def aggregate_seeds(per_seed: list[dict]) -> dict:
    """Mean, sd, min, max and n over seeds, per data set and method.

    Parameters
    ----------
    per_seed : list of dict
        Single-seed results of :func:`_run_audit`, one per seed.

    Returns
    -------
    dict
        ``{dataset: {method: {"accuracy", "accuracy_loss_pp", "vfe", "ssim_over_prior",
        "best_reid", "best_a4": stats, "ssim": {attack: stats}}}}`` where ``stats`` is
        ``{"mean", "sd", "min", "max", "n"}``. The accuracy loss is paired by seed (each seed's
        method against the same seed's clean model); ``vfe`` is the achieved VFE for VisualMixer
        and the receiver's VFE otherwise (as in the tables). Failed methods count with n = 0.
    """
    out: dict = {}
    for res in per_seed:
        for ds, d in res.get("datasets", {}).items():
            for spec, r in d.get("methods", {}).items():
                out.setdefault(ds, {}).setdefault(spec, []).append(_method_numbers(r))
    agg: dict = {}
    for ds, methods in out.items():
        agg[ds] = {}
        for spec, nums in methods.items():
            a = {key: _stats([x[key] for x in nums]) for key in nums[0] if key != "ssim"}
            atks = list(dict.fromkeys(k for x in nums for k in x["ssim"]))
            a["ssim"] = {at: _stats([x["ssim"].get(at) for x in nums]) for at in atks}
            a["n_seeds"] = len(nums)
            agg[ds][spec] = a
    return agg


# ---------------------------------------------------------------------------------------------
# reuse of `visualmixer train` results

#: audit data set name -> ``visualmixer train --data`` name
TRAIN_DATA = {"fashion-mnist": "fashion-mnist", "photos": "photos"}
_SIZE_KEYS = ("data", "model", "epochs", "train_size", "test_size", "image_size", "channels")


def load_train_runs(dirs) -> list[dict]:
    """Every readable ``metrics.json`` of ``visualmixer train`` under ``dirs`` (recursive).

    Each entry is the file's dict plus ``"_path"``; files without ``config`` (with ``data``,
    ``model``, ``mode`` and ``epochs``) and ``runs`` or ``summary`` are skipped.
    """
    found: list[dict] = []
    for d in [dirs] if isinstance(dirs, (str, os.PathLike)) else dirs:
        root = Path(d)
        paths = [root] if root.is_file() else sorted(root.rglob("metrics.json"))
        for path in paths:
            try:
                m = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(m, dict) or not isinstance(m.get("config"), dict):
                continue
            if "runs" not in m and "summary" not in m:
                continue
            if any(m["config"].get(k) is None for k in ("data", "model", "mode", "epochs")):
                continue  # not a `visualmixer train` run (e.g. a distillation run)
            m["_path"] = str(path)
            found.append(m)
    return found


def _seed_accs(m: dict) -> dict[int, float]:
    return {
        int(r["seed"]): float(r["final_test_acc"])
        for r in m.get("runs") or []
        if r.get("seed") is not None and r.get("final_test_acc") is not None
    }


def find_train_utility(runs: list[dict], dataset: str, prot: Protector, default_region: int) -> dict | None:
    """The ``visualmixer train`` accuracy matching a VisualMixer method, or None.

    A train run matches when its data set, target VFE, mode (``online`` for ``/online``, else
    ``offline``) and region side (None = the size rule, i.e. ``default_region``) equal the
    method's; ``/blocks`` and ``/flat`` have no counterpart in ``visualmixer train``. It needs a
    clean run (``target_vfe`` None) with the same data, model, epochs, train/test sizes, image
    size and channels. Among several matches the pair with the same optimizer, learning rate and
    batch size, then with the most shared seeds, then the first path in sort order wins.

    Returns
    -------
    dict or None
        ``{"accuracy": {"mean", "sd", "n"}, "loss_pp": {"mean", "sd", "n"}, "paired": bool,
        "source", "clean_source", "model", "epochs", "optimizer", "train_size", "seeds",
        "candidates"}``. ``loss_pp`` is 100 × (clean − method) per shared seed; without a shared
        seed it is the difference of the means (``paired`` False, sd None).
    """
    if getattr(prot, "kind", None) != "visualmixer" or prot.blocks or prot.keyblocks or not prot.channel_order:
        return None
    data = TRAIN_DATA.get(dataset, dataset)
    mode = "online" if prot.online else "offline"
    region = prot.region or default_region
    vms, cleans = [], []
    for m in runs:
        c = m["config"]
        if c.get("data") != data:
            continue
        if c.get("target_vfe") is None:
            cleans.append(m)
            continue
        try:
            tau = float(c["target_vfe"])
        except (TypeError, ValueError):
            continue
        if abs(tau - prot.tau) > 1e-9 or c.get("mode", "offline") != mode:
            continue
        if (c.get("region") or default_region) != region:
            continue
        vms.append(m)
    pairs = []
    for v in vms:
        for cl in cleans:
            if any(v["config"].get(k) != cl["config"].get(k) for k in _SIZE_KEYS):
                continue
            same_opt = all(v["config"].get(k) == cl["config"].get(k) for k in ("optimizer", "lr", "batch_size"))
            shared = sorted(set(_seed_accs(v)) & set(_seed_accs(cl)))
            pairs.append(((not same_opt, -len(shared), v["_path"], cl["_path"]), v, cl, shared))
    if not pairs:
        return None
    pairs.sort(key=lambda p: p[0])
    _, v, cl, shared = pairs[0]
    va, ca = _seed_accs(v), _seed_accs(cl)
    if va:
        acc = _stats(list(va.values()))
    else:
        fs = (v.get("summary") or {}).get("final_test_acc") or {}
        acc = {"mean": fs.get("mean"), "sd": fs.get("std"), "n": fs.get("n", 0)}
    if shared:
        loss = _stats([100.0 * (ca[s] - va[s]) for s in shared])
    else:
        cm = _stats(list(ca.values()))["mean"]
        if cm is None:
            cm = ((cl.get("summary") or {}).get("final_test_acc") or {}).get("mean")
        loss = {"mean": None if cm is None or acc["mean"] is None else 100.0 * (cm - acc["mean"]), "sd": None, "n": 0}
    c = v["config"]
    return {
        "accuracy": {k: acc.get(k) for k in ("mean", "sd", "n")},
        "loss_pp": {k: loss.get(k) for k in ("mean", "sd", "n")},
        "paired": bool(shared),
        "source": v["_path"],
        "clean_source": cl["_path"],
        "model": c.get("model"),
        "epochs": c.get("epochs"),
        "optimizer": c.get("optimizer"),
        "train_size": c.get("train_size"),
        "seeds": shared,
        "candidates": len(pairs),
    }


def attach_train_utility(results: dict, dirs, *, log=print) -> int:
    """Add ``train_utility`` (:func:`find_train_utility`) to the matching methods of ``results``.

    Returns the number of methods that got one.
    """
    runs = load_train_runs(dirs)
    log(f"[audit] train results: {len(runs)} metrics.json file(s) under {', '.join(map(str, dirs))}")
    count = 0
    for ds, d in results.get("datasets", {}).items():
        for spec, r in d.get("methods", {}).items():
            try:
                prot = Protector(spec)
            except ValueError:
                continue
            tu = find_train_utility(runs, ds, prot, int(d["region"]))
            if tu is not None:
                r["train_utility"] = tu
                count += 1
    return count


def _run_audit(cfg: AuditConfig, *, log=print) -> tuple[dict, dict]:
    """Run the audit; returns ``(results, pictures)``.

    ``results`` is JSON-safe: per data set, the prior-only scores and, per method, utility, VFE
    and every attack's scores. ``pictures`` holds uint8 image tensors for the report grids:
    ``pictures[dataset][method] = {"original", "protected", "A2", "A3", "A5"}`` (``examples``
    victims each) and ``pictures["faces"][method]`` for A6.
    """
    unknown = [a for a in cfg.attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; choose from {', '.join(ATTACKS)} or 'all'")
    methods = expand_methods(cfg.methods)
    if "clean" not in methods:
        methods = ["clean"] + methods
    if cfg.dpsgd and not any(m.startswith("dpsgd") for m in methods):
        try:
            import opacus  # noqa: F401

            methods.append("dpsgd:1.0")
        except ImportError:
            cfg.notes.append("DP-SGD row skipped: opacus is not installed (pip install 'visualmixer[dp]').")
    protectors = {m: Protector(m) for m in methods}  # validates every spec before any work
    attacks = set(cfg.attacks)
    t_start = time.time()
    results: dict = {"config": _clean_json(asdict(cfg)), "datasets": {}, "goals": GOALS}
    pictures: dict = {}
    from visualmixer.eval.report.data import face_images, load_audit_data

    for ds in cfg.datasets:
        t0 = time.time()
        data = load_audit_data(
            ds, n_train=cfg.n_train, n_victims=cfg.n_victims, n_attacker=cfg.n_attacker, seed=cfg.seed
        )
        victims = data.victim_images
        n, c, h, w = victims.shape
        log(
            f"[audit] {ds}: {len(data.train_images)} training, {n} victims, "
            f"{len(data.attacker_images)} attacker images, {h}x{w}x{c}"
        )
        region = default_region(h, w)
        k = data.num_classes
        rec = None
        if "A4" in attacks:
            rec = Recognizer(k, epochs=cfg.epochs, width=cfg.width, device=cfg.device, seed=cfg.seed)
            rec.fit(data.attacker_images, data.attacker_labels)
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
            "prior": prior,
            "methods": {},
        }
        pics: dict = {}
        clean_acc = None
        for spec in _bar(methods, cfg.progress, ds):
            tm = time.time()
            try:
                r, pic = _audit_method(cfg, protectors[spec], data, rec, region, attacks)
            except Exception as exc:  # one failing method must not lose the others' results
                r, pic = {"spec": spec, "kind": protectors[spec].kind, "error": f"{type(exc).__name__}: {exc}"}, None
                log(f"[audit] {ds} {spec}: FAILED: {r['error']}")
            r["seconds"] = round(time.time() - tm, 1)
            if r["kind"] == "clean":
                clean_acc = r.get("accuracy")
            ds_res["methods"][spec] = r
            if pic is not None:
                pics[spec] = pic
            log(f"[audit] {ds} {spec}: accuracy {r.get('accuracy')}, {r['seconds']} s")
        for r in ds_res["methods"].values():
            if clean_acc is not None and r.get("accuracy") is not None:
                r["accuracy_loss_pp"] = 100.0 * (clean_acc - r["accuracy"])
            if "attacks" in r:
                _summarise_method(r, ds_res)
        ds_res["seconds"] = round(time.time() - t0, 1)
        results["datasets"][ds] = ds_res
        pictures[ds] = pics
    if "A6" in attacks:
        t0 = time.time()
        faces = face_images(128, cfg.n_faces)
        fres: dict = {"n_images": int(faces.shape[0]), "methods": {}}
        fpics: dict = {}
        for spec in _bar(methods, cfg.progress, "A6 faces"):
            if spec.startswith("dpsgd"):
                continue
            try:
                blk = _faces_block(cfg, protectors[spec], faces, estimates=spec != "clean")
            except Exception as exc:  # keep the other methods' results
                fres["methods"][spec] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"[audit] A6 {spec}: FAILED: {fres['methods'][spec]['error']}")
                continue
            fres["methods"][spec] = blk["rates"]
            fpics[spec] = {"original": faces[:4], "protected": blk["protected"][:4]}
            fpics[spec].update({v: im[:4] for v, im in blk["views"].items() if v != "A1"})
        fres["seconds"] = round(time.time() - t0, 1)
        results["faces"] = fres
        pictures["faces"] = fpics
        log(f"[audit] A6 faces: {fres['seconds']} s")
    results["seconds"] = round(time.time() - t_start, 1)
    results["notes"] = list(cfg.notes)
    return _clean_json(results), pictures


def _summarise_method(r: dict, ds_res: dict) -> None:
    """Best attack per score, and the issue-6 goal checks."""
    atk = r.get("attacks", {})
    prior_ssim = ds_res["prior"]["class_mean"]["ssim"]["mean"]
    best_ssim = max((s["ssim"]["mean"] for s in atk.values()), default=None)
    best_att = max(atk, key=lambda a: atk[a]["ssim"]["mean"]) if atk else None
    best_reid = max((s["reid"]["rate"] for s in atk.values() if "reid" in s), default=None)
    best_a4 = max(r["A4"].values()) if r.get("A4") else None
    chance = ds_res["chance_accuracy"]
    r["summary"] = {
        "best_ssim": best_ssim,
        "best_ssim_attack": best_att,
        "ssim_over_prior": None if best_ssim is None else best_ssim - prior_ssim,
        "best_reid": best_reid,
        "reid_over_chance": None if best_reid is None else best_reid / ds_res["reid_chance"],
        "best_a4": best_a4,
        "a4_over_chance": None if best_a4 is None else best_a4 - chance,
    }
    s = r["summary"]
    r["goals_met"] = {
        "ssim": s["ssim_over_prior"] is not None and s["ssim_over_prior"] <= GOALS["ssim_over_prior"],
        "reid": s["reid_over_chance"] is not None and s["reid_over_chance"] <= GOALS["reid_over_chance"],
        "a4": s["a4_over_chance"] is not None and s["a4_over_chance"] <= GOALS["a4_over_chance"],
        "accuracy": r.get("accuracy_loss_pp") is not None and r["accuracy_loss_pp"] <= GOALS["acc_loss_pp"],
    }
