"""visualmixer.attacks: each attack on tiny inputs, and that each one can actually succeed."""

import pytest
import torch

from visualmixer import metrics as M
from visualmixer.attacks import (
    LearnedInversion,
    Recognizer,
    detect_faces,
    direct_view,
    haar_available,
    realign_and_solve,
    realign_channels,
    region_mosaic,
    solve_jigsaw,
)
from visualmixer.attacks.a5_jigsaw import _from_tiles, _to_tiles


def smooth(n=8, c=1, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, max(1, h // 4), max(1, w // 4), generator=g)
    return torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def ramp(h=8, w=8):
    yy, xx = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    f = (xx + 0.37 * yy) / (w + 0.37 * h)
    return torch.stack([f, f**2, f**0.5])[None]  # channels: monotone functions of one field


def test_a1_direct_view():
    x = (torch.rand(2, 3, 5, 7) * 255).to(torch.uint8)
    d = direct_view(x)
    assert d.dtype == torch.float32 and torch.allclose(d, x.float() / 255)
    assert direct_view(x[0]).shape == (1, 3, 5, 7)


def test_a2_mosaic_survives_in_region_shuffle():
    x = torch.rand(2, 3, 10, 9)
    m = region_mosaic(x, 4)
    assert m.shape == x.shape
    assert torch.allclose(m[:, :, :4, :4], x[:, :, :4, :4].mean(dim=(2, 3), keepdim=True).expand(-1, -1, 4, 4))
    assert torch.allclose(m[:, :, 8:, 8:], x[:, :, 8:, 8:].mean(dim=(2, 3), keepdim=True).expand(-1, -1, 2, 1))
    # any permutation inside regions leaves the mosaic unchanged: the leak by construction
    tiles = _to_tiles(x, 4, 1).clone()
    shuffled = _from_tiles(tiles.flip(-3), x, 4, 1)
    assert not torch.equal(shuffled, x)
    assert torch.allclose(region_mosaic(shuffled, 4), m, atol=1e-6)
    g = region_mosaic(x, 4, grey=True)
    assert torch.allclose(g[:, 0], g[:, 1])


def test_a3_learns_the_identity_map():
    own = smooth(n=192, h=12, w=12, seed=1)
    victims = smooth(n=16, h=12, w=12, seed=2)
    inv = LearnedInversion(lambda x: x, epochs=6, batch_size=32, lr=5e-3, base=8, levels=2, seed=0).fit(own)
    est = inv(victims)
    assert est.shape == victims.shape
    assert inv.history[-1] < inv.history[0]
    assert float(M.ssim(victims, est).mean()) > 0.8
    assert M.reid_rate(est, victims)["rate"] == 1.0


def test_a3_inverts_a_fixed_flip_and_needs_fit():
    own = smooth(n=128, h=8, w=8, seed=3)
    with pytest.raises(ValueError, match="fit"):
        LearnedInversion(lambda x: x)(own)
    inv = LearnedInversion(lambda x: x.flip(-1), epochs=6, batch_size=32, lr=5e-3, base=8, levels=2).fit(own)
    v = smooth(n=8, h=8, w=8, seed=4)
    assert float(M.ssim(v, inv(v.flip(-1))).mean()) > float(M.ssim(v, v.flip(-1)).mean())


def test_a4_recognizer_accuracy_and_chance():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (200,), generator=g)
    x = torch.rand(200, 1, 8, 8, generator=g) * 0.3 + y.view(-1, 1, 1, 1) * 0.6
    rec = Recognizer(2, epochs=3, width=8, seed=0).fit(x[:150], y[:150])
    r = rec.accuracy(x[150:], y[150:])
    assert r["chance"] == 0.5 and r["accuracy"] > 0.9
    assert rec.predict(x[:3]).dtype == torch.int64
    with pytest.raises(ValueError, match="labels"):
        rec.fit(x, y[:10])


def test_a5_solves_a_2x2_tile_puzzle():
    img = ramp()
    tiles = _to_tiles(img, 4, 2).clone()
    tiles[:, :, 0, 0] = tiles[:, :, 0, 0][:, :, torch.tensor([3, 1, 0, 2])]
    puzzle = _from_tiles(tiles, img, 4, 2)
    assert not torch.allclose(puzzle, img)
    assert torch.allclose(solve_jigsaw(puzzle, 4, 2), img)
    assert torch.allclose(realign_and_solve(puzzle, 4, 2), img)


def test_a5_realigns_independently_shuffled_channels():
    img = ramp()
    g = torch.Generator().manual_seed(0)
    tiles = _to_tiles(img, 4, 1).clone()
    for ch in (1, 2):
        for i in range(2):
            for j in range(2):
                tiles[0, ch, i, j] = tiles[0, ch, i, j][torch.randperm(16, generator=g)]
    mixed = _from_tiles(tiles, img, 4, 1)
    assert torch.allclose(realign_channels(mixed, 4, 1), img)
    # larger tiles go through the assignment solver
    tiles = _to_tiles(img, 4, 2).clone()
    tiles[0, 2, 1, 1] = tiles[0, 2, 1, 1][torch.tensor([2, 3, 1, 0])]
    mixed = _from_tiles(tiles, img, 4, 2)
    assert torch.allclose(realign_channels(mixed, 4, 2), img)
    with pytest.raises(ValueError, match="divide"):
        solve_jigsaw(img, 4, 3)


def test_a5_beats_direct_view_on_visualmixer():
    vm = pytest.importorskip("visualmixer")
    if not hasattr(vm, "obfuscate"):
        pytest.skip("core not importable")
    from skimage.data import astronaut

    a = torch.from_numpy(astronaut().copy()).permute(2, 0, 1)[None].float()
    x = torch.nn.functional.interpolate(a, size=64, mode="area").round().to(torch.uint8)
    key = vm.Key(bytes(range(32)))  # a fixed test key: deterministic permutations
    obf = vm.obfuscate(x, key=key, ids=[0], target_vfe=0.5, region=8, channel_order=False).images
    est = realign_and_solve(obf, 8)
    assert est.shape == x.shape
    assert float(M.ssim(x, est).mean()) > float(M.ssim(x, obf).mean()) + 0.1


def test_a6_finds_the_astronaut():
    from skimage.data import astronaut

    if not haar_available():
        pytest.skip("OpenCV with Haar cascades not installed")
    a = torch.from_numpy(astronaut().copy()).permute(2, 0, 1)
    boxes = detect_faces(a)[0]
    assert len(boxes) >= 1
    x0, y0, x1, y1 = boxes[0]
    assert 150 < (x0 + x1) / 2 < 300 and 50 < (y0 + y1) / 2 < 200  # the face, not the flag
    assert len(detect_faces(torch.zeros(3, 64, 64, dtype=torch.uint8))[0]) == 0
    with pytest.raises(ValueError, match="detector"):
        detect_faces(a, detector="yolo")
