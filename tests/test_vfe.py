import numpy as np
import pytest
import torch

import visualmixer as vm
from visualmixer.core.vfe import window_scores


def _reference_vfe_map(img: np.ndarray, s: int) -> np.ndarray:
    """Straightforward per-window loop over SPEC §3 (for checking the batched kernel)."""
    c, h, w = img.shape
    img = img.astype(np.float64)
    out = np.zeros((c, -(-h // s), -(-w // s)))
    for ch in range(c):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                win = img[ch, i * s : (i + 1) * s, j * s : (j + 1) * s]
                a, b = win.shape
                g = ((win[:, 1:] - win[:, :-1]) ** 2).sum() + ((win[1:] - win[:-1]) ** 2).sum()
                v = ((win - win.mean()) ** 2).sum()
                pairs = a * (b - 1) + (a - 1) * b
                out[ch, i, j] = 0.0 if v == 0 or pairs == 0 else (a * b - 1) / (2 * pairs) * g / v
    return out


@pytest.mark.parametrize("shape, s", [((3, 32, 32), 8), ((1, 19, 27), 4), ((3, 5, 40), 16)])
def test_matches_reference(shape, s):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    x[:, : shape[1] // 2] //= 7  # some structure
    got = vm.vfe_map(x, window=s).numpy()
    np.testing.assert_allclose(got, _reference_vfe_map(x.numpy(), s), rtol=1e-9, atol=1e-12)
    got_f = vm.vfe_map(x.double() / 255, window=s).numpy()
    np.testing.assert_allclose(got_f, got, rtol=1e-7, atol=1e-9)


def test_noise_scores_one_at_224():
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (4, 3, 224, 224), dtype=torch.uint8, generator=g)
    v = vm.vfe(noise)
    assert v.shape == (4,) and v.dtype == torch.float64
    assert torch.all((v - 1).abs() < 0.02)
    assert abs(float(vm.vfe(torch.rand(1, 1, 224, 224, generator=g))) - 1) < 0.02


def test_noise_scores_one_with_partial_windows():
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(8, 3, 131, 77, generator=g)
    assert torch.all((vm.vfe(noise, saliency="uniform") - 1).abs() < 0.03)


def test_smooth_ramp_scores_near_zero():
    ramp = torch.linspace(0, 1, 224).view(1, 1, 1, -1).expand(1, 3, 224, 224) + torch.linspace(
        0, 0.5, 224
    ).view(1, 1, -1, 1)
    assert float(vm.vfe(ramp)) < 0.02


def test_flat_image_scores_zero():
    assert float(vm.vfe(torch.full((1, 3, 64, 64), 0.7))) == 0.0
    assert float(vm.vfe(torch.full((1, 3, 64, 64), 200, dtype=torch.uint8))) == 0.0


def test_invariant_to_offset_and_scale(photos):
    _, x = photos
    xf = x[:3].double() / 255
    base = vm.vfe(xf)
    for a, b in [(2.0, 0.0), (0.1, 0.3), (1.0, -5.0), (1000.0, 7.0)]:
        torch.testing.assert_close(vm.vfe(a * xf + b), base, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(vm.vfe(x[:3]), base, rtol=1e-5, atol=1e-8)


def test_natural_photos_score_low_and_shuffles_raise_it(photos):
    _, x = photos
    v = vm.vfe(x)
    assert torch.all((v > 0.05) & (v < 0.35)), v
    key = vm.Key.from_seed(0)
    r = vm.obfuscate(x, key=key, ids=range(len(x)), target_vfe=0.9)
    assert torch.all(vm.vfe(r.images, saliency=vm.spectral_residual(x)) > 0.85)


def test_saliency_options(photos):
    _, x = photos
    x = x[:2]
    s = vm.default_region(*x.shape[-2:])
    uniform = vm.vfe(x, saliency="uniform")
    ones = vm.vfe(x, saliency=torch.ones(2, 1, 128, 128))
    torch.testing.assert_close(uniform, ones)
    nh = -(-128 // s)
    per_window = vm.vfe(x, saliency=torch.ones(2, nh, nh))
    torch.testing.assert_close(per_window, uniform)
    called = vm.vfe(x, saliency=lambda imgs: torch.ones(imgs.shape[0], 128, 128))
    torch.testing.assert_close(called, uniform)
    # all weight on one window gives that window's score
    m = torch.zeros(2, nh, nh)
    m[:, 0, 0] = 1
    torch.testing.assert_close(vm.vfe(x, saliency=m), window_scores(x, s)[:, :, 0, 0].mean(1))


def test_map_shapes_and_single_image():
    x = torch.rand(3, 30, 50)
    assert vm.vfe_map(x).shape == (3, 8, 13)
    assert vm.vfe(x).shape == ()
    assert vm.vfe_map(torch.rand(2, 1, 30, 50), window=7).shape == (2, 1, 5, 8)


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (torch.rand(5, 5), ValueError, "dimensions"),
        (torch.rand(1, 2, 5, 5), ValueError, "channels"),
        (torch.rand(0, 3, 5, 5), ValueError, "empty"),
        (torch.full((1, 1, 4, 4), float("nan")), ValueError, "NaN"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.int32), TypeError, "dtype"),
        ("an image", TypeError, "Tensor"),
    ],
)
def test_bad_input(bad, exc, match):
    with pytest.raises(exc, match=match):
        vm.vfe(bad)


def test_bad_saliency_and_window():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="saliency map has shape"):
        vm.vfe(x, saliency=torch.ones(1, 1, 5, 5))
    with pytest.raises(ValueError, match="saliency"):
        vm.vfe(x, saliency="fancy")
    with pytest.raises(ValueError, match="non-negative"):
        vm.vfe(x, saliency=-torch.ones(1, 1, 16, 16))
    with pytest.raises(ValueError, match="window"):
        vm.vfe(x, window=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu(photos):
    _, x = photos
    cpu = vm.vfe(x)
    gpu = vm.vfe(x.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)


def test_float32_agrees_with_float64_over_the_documented_range(photos):
    """docs/method.md: float32 input is scored in float32, within 2e-6 of float64 for values of
    magnitude 1e-18 to 1e12; at 1e17 its squares overflow."""
    from visualmixer.data.samples import builtin_photos

    for x in (photos[1][:4], builtin_photos(32)[1][:4]):
        for scale in (1e-18, 1e-10, 1 / 255, 1.0, 1e6, 1e12):
            gap = (vm.vfe(x.float() * scale) - vm.vfe(x.double() * scale)).abs().max().item()
            assert gap < 2e-6, (tuple(x.shape), scale, gap)
    assert vm.vfe(photos[1][:4].float() * 1e17).isnan().any()
