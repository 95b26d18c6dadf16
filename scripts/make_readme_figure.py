"""Regenerate docs/img/grid.png (the README picture): python scripts/make_readme_figure.py"""

from pathlib import Path

import visualmixer as vm
from visualmixer.data.samples import builtin_photos
from visualmixer.eval.report.runpage import save_photo_grid

targets = (0.3, 0.5, 0.7)
names, x = builtin_photos(128, names=("astronaut", "chelsea", "retina"))
key = vm.Key.from_seed(2024)  # a public key: the picture must be reproducible, not secret
outputs = [vm.obfuscate(x, key=key, ids=names, target_vfe=t) for t in targets]
out = Path(__file__).resolve().parent.parent / "docs" / "img" / "grid.png"
save_photo_grid(out, names, x, [r.images for r in outputs], targets, original_vfe=vm.vfe(x).tolist(),
                achieved_vfe=[[r.vfe[i].item() for r in outputs] for i in range(len(names))])
print(f"wrote {out}")
