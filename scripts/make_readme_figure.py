"""Regenerate docs/img/grid.png (the README picture): python scripts/make_readme_figure.py"""

from pathlib import Path

import visualmixer as vm
from visualmixer.cli.run import _save_grid
from visualmixer.data.samples import builtin_photos

targets = (0.3, 0.5, 0.7)
names, x = builtin_photos(128, names=("astronaut", "chelsea", "retina"))
key = vm.Key.from_seed(2024)  # a public key: the picture must be reproducible, not secret
original = vm.vfe(x)
rows = {n: {} for n in names}
outputs = []
for t in targets:
    res = vm.obfuscate(x, key=key, ids=names, target_vfe=t)
    outputs.append(res.images)
    for n, v in zip(names, res.vfe.tolist(), strict=True):
        rows[n][str(t)] = v
out = Path(__file__).resolve().parent.parent / "docs" / "img" / "grid.png"
_save_grid(out, names, x, outputs, targets, original, rows)
print(f"wrote {out}")
