"""`visualmixer train` with an exponential moving average of the model's weights (an experiment).

docs/privacy.md §4c ("Closing the last 0.1 points"): the model trained on collages is tested on
whole images, a shift of inputs; averaging weights along the training path is known to help a
model across such shifts. This evaluates (and checkpoints) the average instead of the last
weights; the owner's teacher is left as the library trains it. Every argument is passed to
`visualmixer train`; ``EMA_DECAY`` (default 0.999, per optimizer step) sets the average. The
last weights' test accuracy is printed (`EMA_LAST`) beside the average's every epoch.

    EMA_DECAY=0.999 OMP_NUM_THREADS=1 python scripts/mix_soft_ema.py train --data fashion-mnist --epochs 10 \
        --model region-sorted --target-vfe 1.0 --mix 16 --mix-balanced --soft-labels region-sorted --out out/e
"""

from __future__ import annotations

import os
import sys

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from visualmixer.cli import main
from visualmixer.train import loop
from visualmixer.train.fit import evaluate_classifier

DECAY = float(os.environ.get("EMA_DECAY", "0.999"))
_library_fit = loop.fit_classifier


def _fit_with_ema(model, data, *, on_step=None, on_epoch_end=None, **kw):
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(DECAY))

    def step(info):
        ema.update_parameters(model)
        if on_step is not None:
            on_step(info)

    def epoch_end(stats):
        d = on_epoch_end.__self__.data  # the run's test images (loop._SeedLog)
        _, raw = evaluate_classifier(model, d.x_test, d.y_test, prepare=d.normalise, batch_size=1024)
        last = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(ema.module.state_dict())
        try:
            on_epoch_end(stats)
        finally:
            model.load_state_dict(last)
        print(f"EMA_LAST epoch {stats.epoch + 1}: the last weights' test acc {raw:.4f}", flush=True)

    result = _library_fit(model, data, on_step=step, on_epoch_end=epoch_end, **kw)
    with torch.no_grad():
        model.load_state_dict(ema.module.state_dict())
    return result


if __name__ == "__main__":
    loop.fit_classifier = _fit_with_ema
    sys.exit(main(sys.argv[1:]))
