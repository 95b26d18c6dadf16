import torch

import visualmixer as vm
from visualmixer.core.saliency import gaussian_blur2d


def test_shape_range_and_batch_independence(photos):
    _, x = photos
    s = vm.spectral_residual(x)
    assert s.shape == (len(x), 1, 128, 128)
    assert float(s.min()) >= 0 and float(s.max()) <= 1
    torch.testing.assert_close(vm.spectral_residual(x[1:2]), s[1:2], rtol=1e-4, atol=1e-5)


def test_flat_image_is_uniform():
    s = vm.spectral_residual(torch.full((1, 3, 40, 40), 0.5))
    torch.testing.assert_close(s, torch.ones_like(s))


def test_salient_object_scores_higher_than_background():
    x = torch.zeros(1, 1, 96, 96)
    x[..., 40:56, 40:56] = 1.0  # a small bright square on a flat background
    s = vm.spectral_residual(x)[0, 0]
    assert s[40:56, 40:56].mean() > 3 * s[:20, :20].mean()


def test_blur_preserves_mean_of_constant():
    x = torch.full((2, 1, 9, 9), 3.0)
    torch.testing.assert_close(gaussian_blur2d(x, 2.0), x)


def test_the_input_is_not_modified(photos):
    """The grey image is summed in place: on a copy, for every input dtype (a float32 image
    would otherwise be its own first channel)."""
    _, x = photos
    for images in (x, x.float(), x.double() / 255, x[:, :1].float()):
        before = images.clone()
        vm.spectral_residual(images)
        assert torch.equal(images, before)
