"""The field's other image-privacy methods, as ``nn.Module`` transforms.

Every baseline takes ``(N, C, H, W)`` or ``(C, H, W)`` images, uint8 or floating in [0, 1], and
returns the same shape and dtype. They live with their registered methods in
:mod:`visualmixer.eval.methods` (one module per family); this module keeps their historical names.

============================  ==================================================================
``GaussianNoise(sigma)``      x + N(0, σ²) per pixel — the "DP-style" image-noise baseline
``DPPix(block, epsilon, m)``  pixelise, then Laplace noise of scale m / (block² · ε) (Fan 2018)
``GaussianBlur(sigma)``       separable Gaussian blur, replicate padding
``Pixelate(block)``           block means, upsampled (edge strips are blocks too)
``BlockScramble(block, key)`` keyed EtC scrambling: block permutation, rotation/flip,
                              negative–positive and channel shuffle per block (Chuman/Kiya)
``InstaHide(k=4)``            mix each image with k−1 others of the batch (random convex weights),
                              then flip the sign of every pixel at random (Huang et al. 2020)
``dpsgd_train(...)``          DP-SGD on clean images with Opacus (protects the model, not pixels;
                              :mod:`visualmixer.train.dpsgd`)
============================  ==================================================================

:func:`make_method` builds the transform of a ``"name:param"`` spec (the one parser,
:func:`visualmixer.eval.methods.parse_method`).
"""

from __future__ import annotations

from torch import nn

from visualmixer.eval.methods import method_names, parse_method
from visualmixer.eval.methods.blur import GaussianBlur
from visualmixer.eval.methods.clean import Identity
from visualmixer.eval.methods.dppix import DPPix
from visualmixer.eval.methods.instahide import InstaHide
from visualmixer.eval.methods.noise import GaussianNoise
from visualmixer.eval.methods.pixelate import Pixelate
from visualmixer.eval.methods.scramble import BlockScramble
from visualmixer.eval.methods.transform import Baseline
from visualmixer.train.dpsgd import dpsgd_train  # re-export: DP-SGD is training, its home is train/

__all__ = [
    "Baseline",
    "Identity",
    "GaussianNoise",
    "DPPix",
    "GaussianBlur",
    "Pixelate",
    "BlockScramble",
    "InstaHide",
    "dpsgd_train",
    "make_method",
    "METHOD_NAMES",
]

#: The names :func:`make_method` accepts (the registered methods with a transform form).
METHOD_NAMES = ("clean", "visualmixer", "noise", "dppix", "blur", "pixelate", "scramble", "instahide")


def make_method(spec: str, *, seed: int | None = None, key=None) -> nn.Module:
    """The ``nn.Module`` transform of a ``"name:param"`` spec, e.g. ``"noise:0.1"``, ``"visualmixer:0.5"``.

    =================  =======================================================
    ``clean``          no protection (:class:`Identity`)
    ``visualmixer:τ``  :class:`visualmixer.VisualMixer` with target VFE τ (``/rN``, ``/flat``)
    ``noise:σ``        :class:`GaussianNoise`
    ``dppix:ε``        :class:`DPPix` with 4-px cells (``dppix:ε/b`` sets the cell)
    ``blur:σ``         :class:`GaussianBlur`
    ``pixelate:b``     :class:`Pixelate`
    ``scramble:b``     :class:`BlockScramble` (one key for the data set)
    ``instahide:k``    :class:`InstaHide`
    =================  =======================================================
    """
    name = spec.partition(":")[0].strip().lower()
    if name not in METHOD_NAMES and name in method_names():
        raise ValueError(f"{name!r} has no transform form; make_method takes {', '.join(METHOD_NAMES)}")
    method = parse_method(spec, seed=seed, key=key)
    return method.module if hasattr(method, "module") else method.as_module()
