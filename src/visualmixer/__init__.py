"""VisualMixer: VFE-targeted, keyed, exactly reversible pixel shuffling for private image training.

>>> import torch, visualmixer as vm
>>> key = vm.Key.generate()
>>> x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
>>> res = vm.obfuscate(x, key=key, ids=range(4), target_vfe=0.5)
>>> bool((vm.restore(res.images, res.plans, key=key, ids=range(4)) == x).all())
True
"""

from visualmixer.core.keys import Key
from visualmixer.core.mixer import ObfuscationResult, Plans, obfuscate, restore
from visualmixer.core.regions import default_region, tile_ladder
from visualmixer.core.saliency import spectral_residual
from visualmixer.core.vfe import vfe, vfe_map
from visualmixer.core.weighting import SaliencyWeights, saliency_weights

__version__ = "0.1.0"

__all__ = [
    "Key",
    "ObfuscatedDataset",
    "ObfuscationResult",
    "Plans",
    "STAdam",
    "SaliencyWeights",
    "VisualMixer",
    "default_region",
    "obfuscate",
    "restore",
    "saliency_weights",
    "spectral_residual",
    "tile_ladder",
    "vfe",
    "vfe_map",
]


# Names of the layers above the core, loaded on first use so `import visualmixer` needs only
# torch, numpy and Pillow (the transform needs torchvision: extra "data").
_LAZY = {
    "VisualMixer": ("visualmixer.data.transforms", "data"),
    "ObfuscatedDataset": ("visualmixer.data.wrapper", "data"),
    "STAdam": ("visualmixer.train.optim", "train"),
}


def __getattr__(name):
    if name in _LAZY:
        module, extra = _LAZY[name]
        from visualmixer.core.optional import require

        return getattr(require(module, extra=extra, purpose=f"visualmixer.{name}"), name)
    raise AttributeError(f"module 'visualmixer' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
