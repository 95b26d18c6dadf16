"""visualmixer.eval.baselines: call shape, dtype, determinism and what each transform does."""

import pytest
import torch

from visualmixer.eval import baselines as B


def imgs(n=3, c=3, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, c, h, w, generator=g) * 255).round().to(torch.uint8)


ALL = [
    lambda: B.Identity(),
    lambda: B.GaussianNoise(0.1, seed=1),
    lambda: B.DPPix(4, 1.0, seed=1),
    lambda: B.GaussianBlur(1.5),
    lambda: B.Pixelate(4),
    lambda: B.BlockScramble(4, key=b"k"),
    lambda: B.InstaHide(4, seed=1),
]


@pytest.mark.parametrize("make", ALL)
@pytest.mark.parametrize("c", [1, 3])
def test_call_shape_and_dtype(make, c):
    x = imgs(c=c, h=18, w=13)
    m = make()
    y = m(x)
    assert y.shape == x.shape and y.dtype == torch.uint8
    yf = m(x.float() / 255)
    assert yf.dtype == torch.float32 and yf.min() >= 0 and yf.max() <= 1
    assert m(x[0]).shape == x[0].shape
    assert isinstance(m.name, str) and m.name


def test_noise_seed_and_sigma_zero():
    x = imgs()
    assert torch.equal(B.GaussianNoise(0.2, seed=5)(x), B.GaussianNoise(0.2, seed=5)(x))
    assert not torch.equal(B.GaussianNoise(0.2)(x), B.GaussianNoise(0.2)(x))
    assert torch.equal(B.GaussianNoise(0.0)(x), x)
    with pytest.raises(ValueError, match="sigma"):
        B.GaussianNoise(-1)


def test_blur_pixelate_dppix():
    flat = torch.full((1, 1, 9, 9), 0.4)
    assert torch.allclose(B.GaussianBlur(2.0)(flat), flat)
    x = torch.arange(16.0).view(1, 1, 4, 4) / 16
    p = B.Pixelate(2)(x)
    assert torch.allclose(p[0, 0, :2, :2], x[0, 0, :2, :2].mean().expand(2, 2))
    # an enormous epsilon is plain pixelation
    assert torch.allclose(B.DPPix(2, 1e9, seed=0)(x), p, atol=1e-6)
    with pytest.raises(ValueError, match="epsilon"):
        B.DPPix(2, 0)
    with pytest.raises(ValueError, match="block"):
        B.Pixelate(0)


def test_block_scramble_keyed_and_exact():
    x = imgs(h=17, w=16)
    a, b = B.BlockScramble(4, key=b"one"), B.BlockScramble(4, key=b"one")
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), B.BlockScramble(4, key=b"two")(x))
    # the part the block does not divide is left alone
    assert torch.equal(a(x)[:, :, 16:], x[:, :, 16:])
    # without negative-positive, a pure permutation of values (per image)
    y = B.BlockScramble(4, key=3, negate=False)(x)
    assert torch.equal(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    # one block = the whole image: a rotation/flip of it
    g = imgs(n=1, c=1, h=4, w=4)
    z = B.BlockScramble(4, key=9, negate=False)(g)[0, 0]
    cands = [torch.rot90(g[0, 0], k) for k in range(4)]
    cands += [c.flip(-1) for c in cands]
    assert any(torch.equal(z, c) for c in cands)
    # per-image mode differs between calls
    pi = B.BlockScramble(4, key=b"k", per_image=True)
    assert not torch.equal(pi(x), pi(x))


def test_instahide_k1_is_sign_flip_and_mix_weights():
    x = torch.rand(4, 1, 8, 8)
    y = B.InstaHide(1, seed=0)(x)
    assert torch.all(torch.isclose(y, x, atol=1e-6) | torch.isclose(y, 1 - x, atol=1e-6))
    m = B.InstaHide(4, seed=0)
    m(x)
    w = m.last_mix["weights"]
    assert torch.allclose(w.sum(1), torch.ones(4)) and (w[:, 0] >= w[:, 1]).all()
    assert torch.equal(m.last_mix["partners"][:, 0], torch.arange(4))


def test_make_method():
    assert isinstance(B.make_method("noise:0.2"), B.GaussianNoise)
    d = B.make_method("dppix:0.5/8")
    assert d.block == 8 and d.epsilon == 0.5
    assert isinstance(B.make_method("scramble:8"), B.BlockScramble)
    assert isinstance(B.make_method("clean"), B.Identity)
    with pytest.raises(ValueError, match="unknown method"):
        B.make_method("rot13:1")
    with pytest.raises(ValueError, match="bad method spec"):
        B.make_method("noise:abc")


def test_dpsgd_train_tiny():
    pytest.importorskip("opacus")
    from torch.utils.data import DataLoader, TensorDataset

    from visualmixer.eval.attacks import SmallCNN

    torch.manual_seed(0)
    x = torch.rand(64, 1, 8, 8)
    y = (x.mean(dim=(1, 2, 3)) > 0.5).long()
    model, eps = B.dpsgd_train(SmallCNN(1, 2, 8), DataLoader(TensorDataset(x, y), batch_size=16), epochs=1)
    assert 0 < eps < float("inf")  # a finite privacy budget was spent (NaN fails too)
    assert model(x).shape == (64, 2)
