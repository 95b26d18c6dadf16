"""Protection methods behind one registry: VisualMixer and its variants, and the baselines.

=====================================================  ============================================
``clean``                                              :class:`CleanMethod` (no protection)
``visualmixer:TAU[/rN][/flat][/blocks|/keyblocks]``    :class:`VisualMixerMethod`
``[/online]``
``noise:SIGMA``                                        :class:`NoiseMethod` (:class:`GaussianNoise`)
``dppix:EPS[/BLOCK]``                                  :class:`DPPixMethod` (:class:`DPPix`)
``blur:SIGMA``                                         :class:`BlurMethod` (:class:`GaussianBlur`)
``pixelate:BLOCK``                                     :class:`PixelateMethod` (:class:`Pixelate`)
``scramble:BLOCK``                                     :class:`ScrambleMethod` (:class:`BlockScramble`)
``instahide:K``                                        :class:`InstaHideMethod` (:class:`InstaHide`)
``dpsgd:NOISE_MULTIPLIER``                             :class:`DPSGDMethod` (protects the model)
=====================================================  ============================================

Importing this package registers the families (one module each). :func:`parse_method` builds any
of them from its spec; :func:`register_method` adds a new one
(see :mod:`visualmixer.eval.methods.registry`).
"""

from visualmixer.eval.methods.base import ModuleMethod, Param, ProtectionMethod
from visualmixer.eval.methods.blur import BlurMethod
from visualmixer.eval.methods.clean import CleanMethod
from visualmixer.eval.methods.dppix import DPPixMethod
from visualmixer.eval.methods.dpsgd import DPSGDMethod
from visualmixer.eval.methods.instahide import InstaHideMethod
from visualmixer.eval.methods.noise import NoiseMethod
from visualmixer.eval.methods.pixelate import PixelateMethod
from visualmixer.eval.methods.registry import (
    METHODS,
    expand_methods,
    get_method,
    method_names,
    parse_method,
    register_method,
    unregister_method,
)
from visualmixer.eval.methods.scramble import ScrambleMethod
from visualmixer.eval.methods.visualmixer import VisualMixerMethod, permute_regions

__all__ = [
    "METHODS",
    "ProtectionMethod",
    "ModuleMethod",
    "Param",
    "register_method",
    "unregister_method",
    "get_method",
    "parse_method",
    "method_names",
    "expand_methods",
    "permute_regions",
    "CleanMethod",
    "VisualMixerMethod",
    "NoiseMethod",
    "DPPixMethod",
    "BlurMethod",
    "PixelateMethod",
    "ScrambleMethod",
    "InstaHideMethod",
    "DPSGDMethod",
]
