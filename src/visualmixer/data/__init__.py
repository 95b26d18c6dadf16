"""Dataset integrations: obfuscate samples as a training pipeline reads them.

- :class:`ObfuscatedDataset` wraps any map-style PyTorch dataset returning ``(image, label, ...)``.
  ``mode="offline"`` gives every sample one fixed shuffle (image id = its index, or your ids);
  ``mode="online"`` re-keys every epoch with the id ``(id, epoch)`` (call :meth:`set_epoch`), which
  acts as augmentation (docs/method.md). Permutations depend only on the key, the id and the epoch —
  never on the DataLoader worker or the order — so they are distinct per sample, the same in every
  run, and the same with 0 or N workers.
- :func:`visualmixer.data.hf.obfuscate_hf` obfuscates a Hugging Face ``datasets.Dataset`` with a
  batched ``map`` (optional extra: ``pip install 'visualmixer[hf]'``).
"""

from visualmixer.data.wrapper import ObfuscatedDataset

__all__ = ["ObfuscatedDataset", "obfuscate_hf", "hf_batch_transform"]


def __getattr__(name):  # the Hugging Face helper is imported only when asked for
    if name in ("obfuscate_hf", "hf_batch_transform"):
        from visualmixer.data import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'visualmixer.data' has no attribute {name!r}")
