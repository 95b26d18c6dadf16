"""The standard attacks A1–A11, registered in the order the audit runs them.

Each wraps the attack's function or class from its own module (``a1_direct`` … ``a10_intersect``;
A11 threads with ``a9_unmix``) in the :class:`~visualmixer.eval.attacks.registry.Attack`
interface. A4 runs after the attacks whose estimates it classifies; A6 works on face photos
instead of a data set's victims.
"""

from __future__ import annotations

import torch

from visualmixer.eval.attacks.a1_direct import direct_view
from visualmixer.eval.attacks.a2_mosaic import region_mosaic
from visualmixer.eval.attacks.a3_inversion import LearnedInversion
from visualmixer.eval.attacks.a4_recognition import Recognizer
from visualmixer.eval.attacks.a5_channel_order import fit_channel_order_prior, recover_channel_order
from visualmixer.eval.attacks.a5_jigsaw import realign_and_solve
from visualmixer.eval.attacks.a7_layout import (
    recover_block_transforms,
    recover_layout,
    undo_block_transforms,
    undo_layout,
)
from visualmixer.eval.attacks.a8_linkage import full_region_columns, linkage_attack
from visualmixer.eval.attacks.a9_unmix import relink_regions, thread_regions
from visualmixer.eval.attacks.a10_intersect import intersect_releases
from visualmixer.eval.attacks.registry import Attack, register_attack

__all__ = ["DirectView", "RegionMosaic", "Jigsaw", "LayoutRecovery", "Inversion", "Recognition", "FaceDetection",
           "Linkage", "Unmixing", "Intersection", "Threading"]

_LABELLED = frozenset({"protected", "labels", "attacker_images", "attacker_labels", "num_classes"})


@register_attack
class DirectView(Attack):
    """A1: the protected image as it is."""

    name, title = "A1", "direct view"

    def run(self, ctx):
        return {"A1": direct_view(ctx.protected)}


@register_attack
class RegionMosaic(Attack):
    """A2: region means (what in-region shuffling always leaks), upsampled."""

    name, title = "A2", "region mosaic"
    needs = frozenset({"protected", "region"})

    def run(self, ctx):
        return {"A2": region_mosaic(ctx.protected, ctx.region)}


@register_attack
class Jigsaw(Attack):
    """A5: channel re-alignment and tile jigsaw; on colour images also its luminance (``A5-grey``)
    and the per-region channel order put back with a prior fitted on the attacker's own images
    (``A5-colour``)."""

    name, title = "A5", "realign and solve"
    needs = frozenset({"protected", "region", "attacker_images"})

    def run(self, ctx):
        est = {"A5": realign_and_solve(ctx.protected, ctx.region)}
        if ctx.protected.shape[1] == 3:  # luminance survives the per-region channel-order shuffle
            a5 = est["A5"]
            est["A5-grey"] = a5.mean(dim=1, keepdim=True).expand_as(a5).contiguous()
            prior = fit_channel_order_prior(ctx.attacker_images, ctx.region)
            est["A5-colour"] = recover_channel_order(a5, ctx.region, prior)
        return est


@register_attack
class LayoutRecovery(Attack):
    """A7: a key-wide block layout recovered from the whole released set (labels leak), and each
    slot's key-wide turn, mirror, negation and channel order (EtC block scrambling); scored are
    the region mosaic of the re-ordered images (``A7``) and the re-ordered images themselves
    (``A7-image``). When whole regions moved (VisualMixer ``/blocks``, ``/keyblocks``: moved, never
    turned), also A5 on the regions moved back (``A7+A5``) and a U-Net trained on the attacker's own
    release of the method without the moves (``A7+A3``, as A9 inverts re-linked collages)."""

    name, title = "A7", "key-wide layout recovery"
    needs = _LABELLED | {"region"}

    def applies_to(self, method):
        return method.changes_pixels

    def run(self, ctx):
        blk = int(ctx.method.block or ctx.region)
        src, neg = recover_layout(ctx.protected, ctx.labels, ctx.attacker_images, ctx.attacker_labels, blk,
                                  num_classes=ctx.num_classes)
        moved = undo_layout(ctx.protected, src, neg, blk)  # every block back at its position
        which = recover_block_transforms(moved, ctx.labels, ctx.attacker_images, ctx.attacker_labels, blk,
                                         num_classes=ctx.num_classes)
        ordered = undo_block_transforms(moved, which, blk)
        est = {"A7": region_mosaic(ordered, blk), "A7-image": ordered}
        if ctx.method.moves_regions:  # the regions moved back as they are: what the in-region attacks undo
            if "A5" in ctx.selected:
                est["A7+A5"] = realign_and_solve(moved, ctx.region)
            if "A3" in ctx.selected and hasattr(ctx.method, "without_mixing"):
                est["A7+A3"] = _unmixed_inversion(ctx)(moved)
        return est


@register_attack
class Inversion(Attack):
    """A3: a U-Net trained on pairs the attacker makes with its own copy of the method (own
    randomness, own key); the direct view where the release is the originals."""

    name, title = "A3", "learned inversion"
    needs = frozenset({"protected", "attacker_images"})

    def run(self, ctx):
        if not ctx.method.changes_pixels:
            return {"A3": direct_view(ctx.protected)}  # nothing to invert
        s = ctx.settings
        attacker = ctx.method.attacker_copy()
        inv = LearnedInversion(attacker, epochs=s.a3_epochs, base=s.a3_base, device=s.device, seed=s.seed,
                               val_fraction=s.a3_val_fraction, patience=s.a3_patience)
        own = ctx.attacker_images
        if ctx.method.protects_sets and ctx.attacker_labels is not None:
            # the attacker mixes its own labelled set with its own key and learns collage -> main source
            released = attacker.protect_set(own, ctx.attacker_labels)
            inv.fit_pairs(released, own[attacker.last_main])
        else:
            inv.fit(own)
        ctx.record["a3_train_loss"] = inv.history
        ctx.record["a3_val_loss"] = inv.val_history
        ctx.record["a3_best_epoch"] = inv.best_epoch
        ctx.record["a3_attacker"] = {"images": int(own.shape[0]), "base": s.a3_base, "max_epochs": s.a3_epochs,
                                     "patience": s.a3_patience, "strength": s.attacker_strength}
        return {"A3": inv(ctx.protected)}


@register_attack
class Recognition(Attack):
    """A4: a classifier trained on the attacker's clean images, applied to the release and to the
    estimates of A2, A3, A5, A5-colour, A7, A7-image, A7+A5 and A7+A3; writes ``record["A4"]``
    (accuracies)."""

    name, title = "A4", "machine recognition"
    reconstructs = False
    needs = frozenset({"protected", "labels", "estimates"})
    classified = ("A2", "A3", "A5", "A5-colour", "A7", "A7-image", "A7+A5", "A7+A3")

    def prepare(self, settings, data):
        rec = Recognizer(data.num_classes, epochs=settings.epochs, width=settings.width, device=settings.device,
                         seed=settings.seed)
        return rec.fit(data.attacker_images, data.attacker_labels)

    def run(self, ctx):
        rec = ctx.state
        if rec is None:
            return {}
        a4 = {"protected": rec.accuracy(ctx.protected, ctx.labels)["accuracy"]}
        for a in self.classified:
            if a in ctx.estimates:
                a4[a] = rec.accuracy(ctx.estimates[a], ctx.labels)["accuracy"]
        ctx.record["A4"] = a4
        return {}


@register_attack
class FaceDetection(Attack):
    """A6: do face detectors still find the faces in the protected photos, and in their A2 and A5
    estimates? Writes ``record[detector] = {view: detection rate}`` (None: detector missing)."""

    name, title = "A6", "face detection"
    scope = "faces"
    needs = frozenset({"protected", "region"})

    def run(self, ctx):
        from visualmixer.eval.attacks.a6_faces import detect_faces, haar_available, mtcnn_available

        views = {"A1": ctx.protected}
        if ctx.method.changes_pixels:
            views["A2"] = region_mosaic(ctx.protected, ctx.region)
            # one pass from one start: 128-px photos have 64-256 tiles per region
            views["A5"] = realign_and_solve(ctx.protected, ctx.region, passes=1, starts=1)
        available = {"haar": haar_available, "mtcnn": mtcnn_available}
        for det in ctx.settings.face_detectors:
            if not available.get(det, lambda: True)():
                ctx.record[det] = None
                continue
            rates = {}
            for view, imgs in views.items():
                boxes = detect_faces(imgs, detector=det)
                rates[view] = sum(len(b) > 0 for b in boxes) / max(1, len(boxes))
            ctx.record[det] = rates
        return {v: im for v, im in views.items() if v != "A1"}


@register_attack
class Linkage(Attack):
    """A8: an attacker who already HOLDS the files asks which were released and where
    (:func:`visualmixer.eval.attacks.a8_linkage.linkage_attack`): findings, not estimates."""

    name, title = "A8", "linkage / membership"
    reconstructs = False
    needs = frozenset({"protected", "held_originals", "attacker_images"})

    def run(self, ctx):
        outsiders = ctx.attacker_images[: ctx.held_originals.shape[0]]  # never released
        res = linkage_attack(ctx.protected, ctx.held_originals, outsiders, sources=ctx.sources, region=ctx.region)
        ctx.record["A8"] = res
        return {}


@register_attack
class Unmixing(Attack):
    """A9 (mixed releases only): re-link each collage's regions from the class's pool of released
    regions guided by A3's estimate (or the region mosaic), then invert the re-linked image with
    a U-Net trained on the attacker's own single-image (unmixed) release
    (:mod:`visualmixer.eval.attacks.a9_unmix`)."""

    name, title = "A9", "un-mixing"
    needs = frozenset({"protected", "labels", "attacker_images"})

    def applies_to(self, method) -> bool:
        return bool(getattr(method, "protects_sets", False))

    def run(self, ctx):
        guide = ctx.estimates.get("A3")
        if guide is None:
            guide = region_mosaic(ctx.protected, ctx.region)
        relinked, chosen = relink_regions(ctx.protected, ctx.labels, guide, ctx.region)
        if ctx.sources is not None:  # scoring only: how often a re-linked region is the main source's
            h, w = ctx.protected.shape[2:]
            src = ctx.sources[:, full_region_columns(h, w, ctx.region)]  # the sources number edge regions too
            main = torch.mode(ctx.sources, dim=1).values  # the main source the audit scores against
            got = src.gather(0, chosen)  # the original each chosen region came from
            ctx.record["a9_relinked_from_main"] = float((got == main[:, None]).double().mean())
            ctx.record["a9_main_share_before"] = float((src == main[:, None]).double().mean())
        return {"A9": _unmixed_inversion(ctx)(relinked)}


def _unmixed_inversion(ctx) -> LearnedInversion:
    """A U-Net trained on the attacker's own release of the method without mixing and without
    moving regions (``without_mixing()``: the in-region shuffle alone), once per method (A9,
    A10 and A11 invert re-linked collages with it, A7+A3 the regions A7 moved back)."""
    if "unmixed_inversion" not in ctx.cache:
        s = ctx.settings
        inv = LearnedInversion(ctx.method.without_mixing(), epochs=s.a3_epochs, base=s.a3_base, device=s.device,
                               seed=s.seed, val_fraction=s.a3_val_fraction, patience=s.a3_patience)
        inv.fit(ctx.attacker_images)
        ctx.cache["unmixed_inversion"] = inv
    return ctx.cache["unmixed_inversion"]


@register_attack
class Intersection(Attack):
    """A10 (online mixing only): follow one region of every collage through several epochs'
    releases by its values, re-assemble its original from the regions that stood beside it most
    often (:mod:`visualmixer.eval.attacks.a10_intersect`), then invert that with A9's U-Net."""

    name, title = "A10", "intersection of online releases"
    needs = frozenset({"protected", "releases", "attacker_images"})

    def applies_to(self, method) -> bool:
        return bool(getattr(method, "protects_sets", False) and getattr(method, "online", False))

    def run(self, ctx):
        out = intersect_releases([ctx.protected, *ctx.releases], ctx.region)
        n, c, h, w = ctx.protected.shape
        images = ctx.protected.clone()  # partial edge regions: the collage's own pixels
        images[:, :, : out.images.shape[2], : out.images.shape[3]] = out.images
        ctx.record["a10_releases"] = 1 + len(ctx.releases)
        if ctx.sources is not None:  # scoring only: the original each re-assembly follows
            # A10 numbers the grid of full regions, the sources every region (edge ones too)
            position = full_region_columns(h, w, ctx.region)
            followed = ctx.sources[:, position[out.anchor]]
            right = (ctx.sources[out.collages, position] == followed[:, None]).double()
            ctx.record["a10_regions_right"] = float(right.mean())
            ctx.record["a10_images_90pct"] = float((right.mean(dim=1) >= 0.9).double().mean())
            ctx.targets["A10"] = followed
        return {"A10": _unmixed_inversion(ctx)(images)}


@register_attack
class Threading(Attack):
    """A11 (mixed releases only): follow every source of a class's pool of released collages across
    the region positions (:func:`visualmixer.eval.attacks.a9_unmix.thread_regions`, one assignment
    per position: needs scipy, the ``eval`` extra), then invert each thread with A9's U-Net. Thread
    ``i`` starts from collage ``i``'s centre full region, so it is scored against THAT region's
    source, not the collage's main source."""

    name, title = "A11", "threading"
    needs = frozenset({"protected", "labels", "attacker_images"})

    def applies_to(self, method) -> bool:
        return bool(getattr(method, "protects_sets", False))

    def run(self, ctx):
        labels = torch.as_tensor(ctx.labels).reshape(-1)
        pools = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels).tolist()]  # the attacker's view
        threaded, chosen = thread_regions(ctx.protected, pools, ctx.region)
        if ctx.sources is not None:  # scoring only: the source each thread started from, and how pure it stayed
            h, w = ctx.protected.shape[2:]
            gh, gw = h // ctx.region, w // ctx.region
            src = ctx.sources[:, full_region_columns(h, w, ctx.region)]  # the sources number edge regions too
            start = src[:, (gh // 2) * gw + gw // 2]  # thread_regions starts at the centre of the full grid
            got = src.gather(0, chosen.to(src.device))  # the original each threaded region came from
            ctx.record["a11_thread_purity"] = float((got == start[:, None]).double().mean())
            ctx.targets["A11"] = start
        return {"A11": _unmixed_inversion(ctx)(threaded)}
