"""`visualmixer train` with two knobs of the soft labels that the library leaves fixed (an experiment).

docs/privacy.md §4c ("Closing the last 0.1 points"): does the model gain from keeping part of the
hard labels, or from a teacher trained at another learning rate? Every argument is passed to
`visualmixer train`; the environment sets the knobs:

- ``ALPHA`` (default 1): the soft labels' share of the loss, ``ALPHA · T² · KL + (1 − ALPHA) · CE``
  (:func:`visualmixer.train.distill.distill_loss`); the library uses 1 (soft labels only).
- ``TEACHER_LR`` (default: the library's 1e-3): the teacher's Adam learning rate.

    ALPHA=0.5 OMP_NUM_THREADS=1 python scripts/mix_soft_knobs.py train --data fashion-mnist --epochs 10 \
        --model region-sorted --target-vfe 1.0 --mix 16 --mix-balanced --soft-labels region-sorted --out out/k
"""

from __future__ import annotations

import os
import sys

from visualmixer.cli import main
from visualmixer.train import loop
from visualmixer.train.distill import teacher_loss

ALPHA = float(os.environ.get("ALPHA", "1.0"))
TEACHER_LR = os.environ.get("TEACHER_LR")


_library_teacher = loop.teacher_for


def _teacher(*args, **kw):
    return _library_teacher(*args, **kw, **({"lr": float(TEACHER_LR)} if TEACHER_LR else {}))


if __name__ == "__main__":
    loop.soft_label_loss = lambda teacher, temperature, **_: teacher_loss(teacher, temperature, alpha=ALPHA)
    loop.teacher_for = _teacher
    sys.exit(main(sys.argv[1:]))
