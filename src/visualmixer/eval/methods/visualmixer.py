"""``visualmixer:TAU[/rN][/flat][/blocks|/keyblocks][/online][/mixK[/similar][/shareS][/balanced[/cyclic]]]``:
VisualMixer and its audit variants.

``TAU`` is the target VFE (default 0.5). Options, combinable:

``/rN``
    region side N (default: the library's size rule);
``/flat``
    no channel-order shuffle;
``/blocks``
    after obfuscation, permute the whole regions of each image (:func:`permute_regions`, a fresh
    permutation per image: hides the A2 region mosaic);
``/keyblocks``
    permute them with ONE permutation per method instance (or per key): a secret key-wide region
    scramble, like EtC block scrambling — a model can learn the fixed layout;
``/online``
    train the audit's utility model on a fresh protection of the training images every epoch
    (online re-keying; the attacks still see one release).
``/mixK``
    keyed region mixing across images (:func:`visualmixer.core.mixing.mix`): the training set is
    protected as a whole, regions exchanged within same-class groups of K, then shuffled inside;
    test images are obfuscated one by one. ``/similar`` groups look-alike images (default: keyed
    random groups); ``/shareS`` exchanges only a keyed share S in (0, 1] of the region positions
    in each group, the others keep each image's own region (default 1: every position; e.g.
    ``visualmixer:0.5/mix4/share0.5``); ``/balanced`` deals every collage each member's regions
    at the same number of positions (:mod:`visualmixer.core.mixgroups`; e.g.
    ``visualmixer:1.0/mix8/balanced``), by the switched deal; ``/balanced/cyclic`` by the cyclic
    deal of format version 3 releases (:mod:`visualmixer.core.mixdeal`; how measurements made
    before the switched deal existed are reproduced).
"""

from __future__ import annotations

import torch

from visualmixer.core.imageops import full_blocks, with_full_blocks
from visualmixer.core.regions import resolve_region
from visualmixer.eval.methods.base import ProtectionMethod, key_seed, os_seed
from visualmixer.eval.methods.registry import register_method
from visualmixer.tools.stats import summary_stats

__all__ = ["VisualMixerMethod", "permute_regions", "VM_OPTIONS"]

VM_OPTIONS = ("/rN", "/flat", "/blocks", "/keyblocks", "/online", "/mixK", "/similar", "/shareS", "/balanced",
              "/cyclic")


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
    n, _, h, w = x.shape
    r = int(region)
    nb = (h // r) * (w // r)
    if n == 0 or nb < 2:
        return x.clone()
    rows = 1 if same_for_all else n
    perm = torch.argsort(torch.rand(rows, nb, generator=generator), dim=1).expand(n, -1).to(x.device)
    blocks = full_blocks(x, r)[torch.arange(n, device=x.device).unsqueeze(1), perm]
    return with_full_blocks(x, blocks)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_options(text: str, spec: str) -> dict:
    """``"0.5/r7/blocks"`` -> keyword arguments of :class:`VisualMixerMethod`."""
    parts = [p.strip() for p in text.split("/") if p.strip()]
    out: dict = {"tau": float(parts[0]) if parts else 0.5}
    for p in parts[1:]:
        if p in ("flat", "blocks", "keyblocks", "online", "similar", "balanced", "cyclic"):
            out[p] = True
        elif p.startswith("r") and p[1:].isdigit() and int(p[1:]) >= 1:
            try:  # the sides the core accepts (at most 256, at most MAX_LEVELS shuffle levels)
                out["region"] = resolve_region(int(p[1:]), 1, 1)
            except ValueError as exc:
                raise ValueError(f"bad visualmixer option /{p} in {spec!r}: {exc}") from None
        elif p.startswith("mix") and p[3:].isdigit():
            out["mix"] = int(p[3:])
        elif p.startswith("share") and _is_number(p[5:]):
            out["share"] = float(p[5:])
        else:
            raise ValueError(
                f"bad visualmixer option {p!r} in {spec!r}; valid options: {', '.join(VM_OPTIONS)} "
                "(e.g. visualmixer:0.5/r7/blocks)"
            )
    return out


@register_method("visualmixer")
class VisualMixerMethod(ProtectionMethod):
    """VisualMixer (:func:`visualmixer.core.mixer.obfuscate`) and its audit variants (module docstring).

    Parameters
    ----------
    tau : float
        Target VFE in [0, 1].
    region : int, optional
        Region side (None: the size rule).
    flat, blocks, keyblocks, online, similar : bool
        The options of the same names.
    mix : int, optional
        Group size K of ``/mixK`` (>= 2); None: no mixing.
    share : float
        ``/shareS``: share of the region positions exchanged per group, in (0, 1] (default 1).
    balanced : bool
        ``/balanced``: balanced assignment of each group's regions to its collages.
    cyclic : bool
        ``/cyclic`` (with ``/balanced``): deal balanced groups by the cyclic design of format
        version 3 instead of the switched one.
    seed, key : optional
        ``key`` (a ``visualmixer.Key``) makes the obfuscation keyed (then ``protect`` needs
        ``ids``) and fixes the ``/keyblocks`` layout; without it, fresh OS randomness. ``seed``
        (experiments, audits: not secret) makes every draw repeatable: call ``c`` obfuscates
        image ``i`` with id ``(c, i)`` under a key derived from the seed, so each call still draws
        new plans, as without a seed.

    Attributes
    ----------
    achieved_vfe : list of float
        The achieved VFE of every image protected since :meth:`reset_records`.
    """

    def __init__(self, tau: float = 0.5, *, region: int | None = None, flat: bool = False, blocks: bool = False,
                 keyblocks: bool = False, online: bool = False, mix: int | None = None, similar: bool = False,
                 share: float = 1.0, balanced: bool = False, cyclic: bool = False, seed: int | None = None,
                 key=None):
        self.tau, self.region, self.channel_order = float(tau), region, not flat
        self.blocks, self.keyblocks, self.online = bool(blocks), bool(keyblocks), bool(online)
        self.mix, self.similar, self.share, self.balanced = mix, bool(similar), share, bool(balanced)
        self.cyclic = bool(cyclic)
        self.protects_sets = mix is not None
        self.last_main: torch.Tensor | None = None
        self.last_sources: torch.Tensor | None = None
        super().__init__(seed=seed, key=key)
        self.utility = "online" if self.online else "offline"
        self.moves_regions = self.blocks or self.keyblocks
        self.achieved_vfe: list[float] = []
        # the region permutations: fresh OS randomness (or, seeded, a stream derived from the seed),
        # apart from torch's global generator
        self._gen = torch.Generator().manual_seed(self._own_seed("blocks"))
        self._region_key = key_seed(key, "region-layout") if key is not None else self._own_seed("region-layout")
        self._calls = 0  # seeded: every call draws new plans (ids (call, i) under the seed's key)

    @classmethod
    def from_params(cls, text, *, seed=None, key=None):
        spec = f"visualmixer:{text}"
        kwargs = _parse_options(text, spec)
        try:
            return cls(**kwargs, seed=seed, key=key)
        except ValueError as exc:
            raise ValueError(f"{exc} in {spec!r}") from None

    def validate(self):
        if not 0 <= self.tau <= 1:
            raise ValueError(f"target VFE must be in [0, 1], got {self.tau}")
        if self.blocks and self.keyblocks:
            raise ValueError("use /blocks or /keyblocks, not both")
        if self.mix is not None and self.mix < 2:
            raise ValueError(f"/mixK needs K >= 2 images per group, got {self.mix}")
        if self.similar and self.mix is None:
            raise ValueError("/similar chooses the groups of /mixK: add /mixK")
        if not (isinstance(self.share, (int, float)) and 0 < self.share <= 1):  # NaN fails too
            raise ValueError(f"/shareS needs a share S in (0, 1], got {self.share}")
        if self.share != 1 and self.mix is None:
            raise ValueError("/shareS is the share of region positions /mixK exchanges: add /mixK")
        if self.balanced and self.mix is None:
            raise ValueError("/balanced deals the regions of /mixK's groups: add /mixK")
        if self.cyclic and not self.balanced:
            raise ValueError("/cyclic is a way to deal /balanced groups: add /balanced")
        if self.mix is not None and (self.blocks or self.keyblocks):
            raise ValueError("/mixK does not combine with /blocks or /keyblocks")

    def param_text(self) -> str:
        opts = [f"r{self.region}"] if self.region else []
        opts += [o for o, on in (("flat", not self.channel_order), ("blocks", self.blocks),
                                 ("keyblocks", self.keyblocks), ("online", self.online)) if on]
        if self.mix is not None:
            opts += [f"mix{self.mix}"] + (["similar"] if self.similar else [])
            opts += [f"share{self.share:g}"] if self.share != 1 else []
            opts += ["balanced"] if self.balanced else []
            opts += ["cyclic"] if self.cyclic else []
        return "/".join([f"{self.tau:g}", *opts])

    def protect(self, images, *, ids=None, key=None):
        from visualmixer.core.mixer import obfuscate

        key = self.key if key is None else key
        if key is None and self.seed is not None:  # repeatable, yet a new draw per call as unseeded
            key, ids = self._seeded_key(), [(self._calls, i) for i in range(images.shape[0])]
            self._calls += 1
        res = obfuscate(images, key=key, ids=ids, target_vfe=self.tau, region=self.region,
                        channel_order=self.channel_order)
        self.achieved_vfe.extend(res.vfe.tolist())
        out = res.images
        r = self.region_for(images.shape[2], images.shape[3])
        if self.blocks:
            out = permute_regions(out, r, self._gen)
        elif self.keyblocks:
            layout = key_seed(key, "region-layout") if key is not None else self._region_key
            out = permute_regions(out, r, torch.Generator().manual_seed(layout), same_for_all=True)
        return out

    def protect_set(self, images, labels, *, ids=None, key=None):
        """With ``/mixK``: mix the labelled set (:func:`visualmixer.core.mixing.mix`) and record
        where every region came from (``last_sources``) and each collage's main source
        (``last_main``); without it, image by image."""
        if self.mix is None:
            return self(images)
        key = self._set_key(key)
        ids = list(range(images.shape[0])) if ids is None else list(ids)
        return self._mixed(images, labels, key, ids)

    def protect_releases(self, images, labels, releases: int, *, key=None) -> list[torch.Tensor]:
        """``releases`` mixed releases of one labelled set, as ``visualmixer train --mix K --mode
        online`` makes them epoch after epoch (one key, image ids ``(index, epoch)``); what an
        attacker who sees several epochs' batches holds (A10). ``last_sources``/``last_main``
        describe the first release."""
        if self.mix is None:
            raise ValueError(f"{self.spec}: protect_releases needs /mixK")
        key = self._set_key(key)
        n = images.shape[0]
        out, first = [], None
        for e in range(releases):  # a loop over releases (epochs), each one batched call
            out.append(self._mixed(images, labels, key, [(i, e) for i in range(n)]))
            first = first or (self.last_sources, self.last_main)
        self.last_sources, self.last_main = first
        return out

    def _set_key(self, key):
        from visualmixer.core.keys import Key

        key = self.key if key is None else key
        if key is None:  # unkeyed audit runs: a fresh key per release (seeded: derived per call)
            key = Key.generate() if self.seed is None else Key.from_seed(key_seed(int(self.seed), f"set{self._calls}"))
            self._calls += 1
        return key

    def _mixed(self, images, labels, key, ids):
        from visualmixer.core.mixing import mix

        res = mix(images, labels, key=key, ids=ids, k=self.mix, grouping="similar" if self.similar else "random",
                  target_vfe=self.tau, region=self.region, channel_order=self.channel_order,
                  share=float(self.share), balanced=self.balanced,
                  design=("cyclic" if self.cyclic else "switched") if self.balanced else None)
        self.achieved_vfe.extend(res.vfe.tolist())
        self.last_sources = res.sources
        self.last_main = torch.mode(self.last_sources, dim=1).values
        return res.images

    def without_mixing(self) -> VisualMixerMethod:
        """The same in-region shuffle without ``/mixK`` (what one image of a mixed release is,
        once its regions are back together): the attacker's own copy for the un-mixing attack."""
        return VisualMixerMethod(self.tau, region=self.region, flat=not self.channel_order,
                                 seed=self.derived_seed("unmixed"))

    def _own_seed(self, purpose: str) -> int:
        seed = self.derived_seed(purpose)
        return os_seed() if seed is None else seed

    def _seeded_key(self):
        from visualmixer.core.keys import Key

        return Key.from_seed(key_seed(int(self.seed), "obfuscate"))

    def as_module(self):
        """The method as a torchvision transform (:class:`visualmixer.data.transforms.VisualMixer`)."""
        if self.moves_regions or self.online or self.mix is not None:
            raise ValueError(f"{self.spec}: /blocks, /keyblocks, /online and /mixK have no transform form")
        from visualmixer.data.transforms import VisualMixer

        return VisualMixer(target_vfe=self.tau, region=self.region, channel_order=self.channel_order)

    def train_equivalent(self) -> dict | None:
        """The ``visualmixer train`` configuration of this variant: ``{"target_vfe", "mode", "region"}``
        (region None = the size rule), or None for ``/blocks``, ``/keyblocks`` and ``/flat``,
        which ``visualmixer train`` does not have."""
        if self.moves_regions or not self.channel_order or self.mix is not None:
            return None
        return {"target_vfe": self.tau, "mode": self.utility, "region": self.region}

    def reset_records(self):
        self.achieved_vfe = []

    def records(self, height, width):
        return {
            "achieved_vfe": summary_stats(self.achieved_vfe),
            "region": self.region_for(height, width),
            "blocks": self.blocks,
            "keyblocks": self.keyblocks,
            "online": self.online,
            "channel_order": self.channel_order,
            "mix": self.mix,
            "mix_grouping": None if self.mix is None else ("similar" if self.similar else "random"),
            "mix_share": None if self.mix is None else float(self.share),
            "mix_balanced": None if self.mix is None else self.balanced,
            "mix_design": None if not self.balanced else "cyclic" if self.cyclic else "switched",
        }
