"""The tinted-fm set: colour images whose label is the garment's shape, not its colour."""

import pytest
import torch

from visualmixer.data.datasets import FASHION_MNIST_DIR, load_dataset
from visualmixer.data.tinted import load_tinted_fashion, tint_over

needs_fm = pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="Fashion-MNIST not installed")


def test_tint_over_blends_by_shape_intensity():
    shapes = torch.tensor([0, 255, 128], dtype=torch.uint8).view(1, 1, 1, 3)
    bg = torch.full((1, 3, 1, 3), 100, dtype=torch.uint8)
    col = torch.tensor([[200, 0, 50]], dtype=torch.uint8)
    out = tint_over(shapes, bg, col)
    assert out[0, :, 0, 0].tolist() == [100, 100, 100]  # transparent: background
    assert out[0, :, 0, 1].tolist() == [200, 0, 50]  # opaque: the tint
    with pytest.raises(ValueError, match="colours must be"):
        tint_over(shapes, bg, col[:, :2])


@needs_fm
def test_tinted_set_shape_determinism_and_colour_independent_of_class():
    a = load_tinted_fashion("test", limit=1000)
    b = load_dataset("tinted-fm", "test")
    assert a.images.shape == (1000, 3, 32, 32) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images[:1000]) and torch.equal(a.labels, b.labels[:1000])
    # the mean colour of the garment pixels says nothing about the class: class means of hue
    # proxies stay close to the overall mean
    fm = load_dataset("fashion-mnist", "test")
    mask = torch.nn.functional.pad(fm.images[:1000], (2, 2, 2, 2)).float() / 255
    col = (a.images.float() * mask).sum((2, 3)) / mask.sum((2, 3)).clamp(min=1)  # (N, 3)
    overall = col.mean(0)
    for c in range(10):
        assert (col[a.labels == c].mean(0) - overall).abs().max() < 25  # of 255; colours are uniform
    train = load_tinted_fashion("train", limit=8)
    assert not torch.equal(train.images[:8], a.images[:8])
