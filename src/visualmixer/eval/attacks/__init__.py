"""Attacks on obfuscated images, one small module each.

Each attack returns the attacker's best estimate ``x̂`` of the originals (float32 in [0, 1], same
``(N, C, H, W)`` shape) or a decision; :mod:`visualmixer.eval.metrics` scores it against the originals.

=====  ==========================================  ==========================================
A1     :func:`direct_view`                         the obfuscated image as it is
A2     :func:`region_mosaic`                       region means (what always leaks), upsampled
A3     :class:`LearnedInversion`                   U-Net trained on the attacker's own pairs
A4     :class:`Recognizer`                         clean-trained classifier on x̂ (accuracy)
A5     :func:`realign_and_solve`                   channel re-alignment + greedy tile jigsaw
       :func:`recover_channel_order`               (+ per-region channel order from a prior)
A6     :func:`detect_faces`                        OpenCV Haar cascade / facenet-pytorch MTCNN
A7     :func:`recover_layout`, :func:`undo_layout` a key-wide block layout, from the whole set
A8     :func:`~.a8_linkage.linkage_attack`          which held file was released, and where
A9     :func:`~.a9_unmix.relink_regions`            re-linking a mixed release's regions
A10    :func:`~.a10_intersect.intersect_releases`   intersecting several online-mixed releases
A11    :func:`~.a9_unmix.thread_regions`            following every source of a mixed release
=====  ==========================================  ==========================================

The audit runs them through one small interface (:class:`Attack`, :class:`AttackContext`,
:func:`register_attack`; :mod:`visualmixer.eval.attacks.registry`); A1–A11 are registered by
:mod:`visualmixer.eval.attacks.standard`.
"""

from visualmixer.eval.attacks import standard  # noqa: F401  (registers A1-A11)
from visualmixer.eval.attacks.a1_direct import direct_view
from visualmixer.eval.attacks.a2_mosaic import region_mosaic
from visualmixer.eval.attacks.a3_inversion import LearnedInversion, UNet
from visualmixer.eval.attacks.a4_recognition import Recognizer, RecognizerCNN, SmallCNN
from visualmixer.eval.attacks.a5_channel_order import (
    ChannelOrderPrior,
    fit_channel_order_prior,
    recover_channel_order,
)
from visualmixer.eval.attacks.a5_jigsaw import realign_and_solve, realign_channels, solve_jigsaw
from visualmixer.eval.attacks.a6_faces import detect_faces, haar_available, mtcnn_available
from visualmixer.eval.attacks.a7_layout import recover_layout, undo_layout
from visualmixer.eval.attacks.registry import (
    Attack,
    AttackContext,
    attack_names,
    get_attack,
    register_attack,
    registered_attacks,
    unregister_attack,
)

__all__ = [
    "recover_layout",
    "undo_layout",
    "direct_view",
    "region_mosaic",
    "LearnedInversion",
    "UNet",
    "Recognizer",
    "RecognizerCNN",
    "SmallCNN",
    "realign_and_solve",
    "realign_channels",
    "solve_jigsaw",
    "ChannelOrderPrior",
    "fit_channel_order_prior",
    "recover_channel_order",
    "detect_faces",
    "haar_available",
    "mtcnn_available",
    "Attack",
    "AttackContext",
    "attack_names",
    "get_attack",
    "register_attack",
    "registered_attacks",
    "unregister_attack",
]
