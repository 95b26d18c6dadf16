"""visualmixer.eval.attacks: each attack on tiny inputs, and that each one can actually succeed."""

import pytest
import torch

from visualmixer.eval import metrics as M
from visualmixer.eval.attacks import (
    ChannelOrderPrior,
    LearnedInversion,
    Recognizer,
    detect_faces,
    direct_view,
    fit_channel_order_prior,
    haar_available,
    realign_and_solve,
    realign_channels,
    recover_channel_order,
    region_mosaic,
    solve_jigsaw,
)
from visualmixer.eval.attacks.a5_jigsaw import _from_tiles, _to_tiles


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
    with pytest.raises(ValueError, match=r"call fit\(\) on the attacker's own images before attacking"):
        LearnedInversion(lambda x: x)(own)
    inv = LearnedInversion(lambda x: x.flip(-1), epochs=6, batch_size=32, lr=5e-3, base=8, levels=2).fit(own)
    v = smooth(n=8, h=8, w=8, seed=4)
    assert float(M.ssim(v, inv(v.flip(-1))).mean()) > float(M.ssim(v, v.flip(-1)).mean())


def test_a3_reads_a_side_input_when_the_image_hides_everything():
    # the "protected" image is noise independent of the original; the side input (a coarse grid, as a
    # teacher's features) carries the original at the deepest level's resolution: only the attack that
    # reads it can reconstruct
    own, victims = smooth(n=192, h=12, w=12, seed=5), smooth(n=16, h=12, w=12, seed=6)

    def noise(x, seed):
        return torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))

    def coarse(x):
        return torch.nn.functional.avg_pool2d(x, 2)  # (N, 1, 6, 6): levels=2 -> deepest level 6x6

    kw = dict(epochs=8, batch_size=32, lr=5e-3, base=8, levels=2, seed=0)
    with_side = LearnedInversion(lambda x: x, **kw).fit_pairs(noise(own, 1), own, side=coarse(own))
    without = LearnedInversion(lambda x: x, **kw).fit_pairs(noise(own, 1), own)
    est = with_side(noise(victims, 2), side=coarse(victims))
    assert with_side.net.side_channels == 1 and est.shape == victims.shape
    assert float(M.ssim(victims, est).mean()) > float(M.ssim(victims, without(noise(victims, 2))).mean()) + 0.3
    assert M.reid_rate(est, victims)["rate"] > 0.8
    with pytest.raises(ValueError, match="side"):
        with_side(victims)  # trained with a side input: the victims' is needed too
    with pytest.raises(ValueError, match="side"):
        without(victims, side=coarse(victims))
    with pytest.raises(ValueError, match="side"):
        LearnedInversion(lambda x: x, epochs=1).fit_pairs(own, own, side=coarse(own)[:5])


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
    with pytest.raises(ValueError, match=r"tile \(3\) must divide region \(4\)"):
        solve_jigsaw(img, 4, 3)


def test_a5_beats_direct_view_on_visualmixer():
    from skimage.data import astronaut

    import visualmixer as vm  # the package under test: never a reason to skip

    a = torch.from_numpy(astronaut().copy()).permute(2, 0, 1)[None].float()
    x = torch.nn.functional.interpolate(a, size=64, mode="area").round().to(torch.uint8)
    key = vm.Key(bytes(range(32)))  # a fixed test key: deterministic permutations
    obf = vm.obfuscate(x, key=key, ids=[0], target_vfe=0.5, region=8, channel_order=False).images
    est = realign_and_solve(obf, 8)
    assert est.shape == x.shape
    assert float(M.ssim(x, est).mean()) > float(M.ssim(x, obf).mean()) + 0.1


def two_tone(n, seed, h=16, w=16):
    """uint8 colour images: reddish top half, bluish bottom half, per-image jitter and pixel noise."""
    g = torch.Generator().manual_seed(seed)
    top = torch.tensor([0.75, 0.45, 0.2]) + 0.04 * torch.randn(n, 3, generator=g)
    bot = torch.tensor([0.2, 0.45, 0.75]) + 0.04 * torch.randn(n, 3, generator=g)
    x = torch.empty(n, 3, h, w)
    x[:, :, : h // 2] = top[:, :, None, None]
    x[:, :, h // 2 :] = bot[:, :, None, None]
    x = x + 0.05 * torch.randn(n, 3, h, w, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def scramble_orders(x, region, seed):
    """Apply a random channel permutation to every region (torch ops only); also return them."""
    n, c, h, w = x.shape
    g = torch.Generator().manual_seed(seed)
    sigma = torch.rand(n, h // region, w // region, c, generator=g).argsort(-1)  # out c <- src sigma[c]
    idx = sigma.permute(0, 3, 1, 2).repeat_interleave(region, 2).repeat_interleave(region, 3)
    return x.gather(1, idx), sigma


def test_a5_recovers_channel_order_with_a_learned_prior():
    own, vic = two_tone(200, seed=1), two_tone(20, seed=2)
    mixed, sigma = scramble_orders(vic, 4, seed=3)
    assert (sigma != torch.arange(3)).any(-1).float().mean() > 0.7  # most regions really scrambled
    prior = fit_channel_order_prior(own, 4)
    assert isinstance(prior, ChannelOrderPrior) and (prior.rows, prior.cols) == (4, 4)
    out, orders = recover_channel_order(mixed, 4, prior, scheme=False, return_orders=True)
    assert out.dtype == torch.uint8 and out.shape == vic.shape
    ref = vic.float()
    err_mixed = (mixed.float() - ref).abs().mean()
    err_out = (out.float() - ref).abs().mean()
    assert err_out < 0.15 * err_mixed
    # the chosen order of (nearly) every region is the one applied
    from visualmixer.eval.attacks.a5_channel_order import _SIGMAS

    assert (_SIGMAS[orders] == sigma).all(-1).float().mean() > 0.95
    # the position-free generic rule (R > G > B) cannot get the blue bottom half right
    generic = recover_channel_order(mixed, 4, None, scheme=False)
    assert (generic.float() - ref)[:, :, 8:].abs().mean() > 3 * (out.float() - ref)[:, :, 8:].abs().mean()
    # a single image (C, H, W) and float input keep their form
    one = recover_channel_order(mixed[0].float() / 255, 4, prior, scheme=False)
    assert one.shape == vic.shape[1:] and one.dtype == torch.float32
    assert torch.allclose(one, out[0].float() / 255)


def test_a5_channel_order_edge_cases():
    grey = (torch.rand(2, 1, 12, 12) * 255).to(torch.uint8)
    assert torch.equal(recover_channel_order(grey, 4), grey)
    with pytest.raises(ValueError, match=r"needs colour \(3-channel\) images, got 1 channel"):
        fit_channel_order_prior(grey, 4)
    prior = fit_channel_order_prior(two_tone(10, seed=0), 4)
    with pytest.raises(ValueError, match="prior fitted for a 4x4 region grid, images give 2x2"):
        recover_channel_order(two_tone(2, seed=1, h=8, w=8), 4, prior)
    with pytest.raises(ValueError, match="prior fitted for region 4, images use region 2"):
        recover_channel_order(two_tone(2, seed=1), 2, prior)
    with pytest.raises(ValueError, match="decision"):
        recover_channel_order(two_tone(2, seed=1), 4, prior, decision="best")
    with pytest.raises(ValueError, match="channel_prior"):
        realign_and_solve(two_tone(2, seed=1), 4, channel_prior="learned")
    # without a prior: the generic R > G > B rule puts the reddish top half back
    top, _ = scramble_orders(two_tone(10, seed=9)[:, :, :8], 4, seed=10)
    ref = two_tone(10, seed=9)[:, :, :8].float()
    fixed = recover_channel_order(top, 4, None, smooth=0)
    assert (fixed.float() - ref).abs().mean() < 0.2 * (top.float() - ref).abs().mean()
    # edge strips (size not a multiple of the region) are recovered too
    x = two_tone(30, seed=4, h=14, w=14)
    mixed, _ = scramble_orders(torch.nn.functional.pad(x, (0, 2, 0, 2)), 4, seed=5)
    mixed = mixed[..., :14, :14].contiguous()
    out = recover_channel_order(mixed, 4, fit_channel_order_prior(two_tone(200, seed=6, h=14, w=14), 4), scheme=False)
    assert (out.float() - x.float()).abs().mean() < 0.15 * (mixed.float() - x.float()).abs().mean()


def test_a5_with_channel_prior_on_visualmixer():
    import visualmixer as vm  # the package under test: never a reason to skip
    own, vic = two_tone(200, seed=7), two_tone(8, seed=8)
    key = vm.Key(bytes(range(32)))
    obf = vm.obfuscate(vic, key=key, ids=list(range(8)), target_vfe=0.5, region=4, channel_order=True).images
    prior = fit_channel_order_prior(own, 4)
    plain = realign_and_solve(obf, 4)
    colour = realign_and_solve(obf, 4, channel_prior=prior)
    assert colour.shape == vic.shape and colour.dtype == torch.float32
    ref = vic.float() / 255
    # region means are untouched by the jigsaw, so compare them: the colours come back
    rm = lambda e: torch.nn.functional.avg_pool2d(e, 4)  # noqa: E731
    assert (rm(colour) - rm(ref)).abs().mean() < 0.2 * (rm(plain) - rm(ref)).abs().mean()
    # without the border term, recovering on the raw obfuscated images gives the same region colours
    direct = recover_channel_order(obf, 4, prior, smooth=0).float() / 255
    assert torch.allclose(rm(direct), rm(recover_channel_order(plain, 4, prior, smooth=0)), atol=1e-5)
    assert (rm(direct) - rm(ref)).abs().mean() < 0.2 * (rm(plain) - rm(ref)).abs().mean()
    # grey images pass through the channel step
    g = realign_and_solve(obf[:, :1], 4, channel_prior=prior)
    assert g.shape == (8, 1, 16, 16)


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


def _class_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey 16×16 images whose layout depends on the class: class k is bright in block row k."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 1, 16, 16, generator=g) * 60
    rows = torch.arange(16).div(4, rounding_mode="floor")
    cols = torch.arange(16).div(4, rounding_mode="floor")
    bright = (rows[None, :, None] == y[:, None, None]).float() * 120 + cols[None, None, :] * 15.0
    return (x + bright[:, None]).clamp(0, 255).to(torch.uint8), y


def test_a7_recovers_a_key_wide_block_layout_from_the_set():
    from visualmixer.eval.attacks import recover_layout, undo_layout
    from visualmixer.eval.baselines import BlockScramble

    own, own_y = _class_images(400, seed=1)  # the attacker's own clean images
    vic, vic_y = _class_images(300, seed=2)
    scr = BlockScramble(4, key=7, rotate=True, negate=True)  # one key-wide scramble
    released = scr(vic)
    src, neg = recover_layout(released, vic_y, own, own_y, block=4)
    assert src.shape == (16,) and sorted(src.tolist()) == list(range(16))
    est = undo_layout(released, src, neg, block=4)
    # block means (what rotation keeps) are back where they belong, for nearly every block
    truth = vic.double().reshape(300, 4, 4, 4, 4).mean(dim=(2, 4))
    got = (est.double() * 255).reshape(300, 4, 4, 4, 4).mean(dim=(2, 4))
    scrambled = released.double().reshape(300, 4, 4, 4, 4).mean(dim=(2, 4))
    err, before = (got - truth).abs().mean(), (scrambled - truth).abs().mean()
    assert err < 0.15 * before, (float(err), float(before))
    # a per-image permutation has no shared layout: the same attack learns nothing
    per_image = BlockScramble(4, per_image=True, rotate=False, negate=False)(vic)
    src2, neg2 = recover_layout(per_image, vic_y, own, own_y, block=4)
    est2 = undo_layout(per_image, src2, neg2, block=4)
    got2 = (est2.double() * 255).reshape(300, 4, 4, 4, 4).mean(dim=(2, 4))
    base2 = per_image.double().reshape(300, 4, 4, 4, 4).mean(dim=(2, 4))
    assert (got2 - truth).abs().mean() > 0.5 * (base2 - truth).abs().mean()


def _template_images(n: int, seed: int, c: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """16×16 images of four classes, each a smooth random class template (no block of it
    symmetric under a turn, mirror or channel swap) plus noise."""
    templates = smooth(4, c, 16, 16, seed=99) * 180
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = templates[y] + torch.rand(n, c, 16, 16, generator=g) * 60
    return x.clamp(0, 255).to(torch.uint8), y


@pytest.mark.parametrize("c", [1, 3])
def test_a7_undoes_each_slots_key_wide_turn_mirror_negation_and_channel_order(c):
    from visualmixer.eval.attacks.a7_layout import (
        block_transforms,
        recover_block_transforms,
        recover_layout,
        undo_block_transforms,
        undo_layout,
    )
    from visualmixer.eval.baselines import BlockScramble

    own, own_y = _template_images(200, seed=1, c=c)
    vic, vic_y = _template_images(100, seed=2, c=c)
    released = BlockScramble(4, key=7)(vic)  # EtC: permute, turn, mirror, negate, re-order channels
    src, neg = recover_layout(released, vic_y, own, own_y, block=4)
    moved = undo_layout(released, src, neg, block=4)
    which = recover_block_transforms(moved, vic_y, own, own_y, block=4)
    assert which.shape == (16,) and int(which.max()) < len(block_transforms(c)) == 16 * (6 if c == 3 else 1)
    assert (which != 0).sum() > 8  # most slots were turned, mirrored or re-coloured
    est = undo_block_transforms(moved, which, block=4)
    assert torch.equal((est * 255).round().to(torch.uint8), vic)  # every image exactly back
    assert M.image_scores(vic, moved)["ssim"]["mean"] < 0.9  # the blocks in place alone are not
    # nothing to undo: the originals keep every block as it is
    assert not recover_block_transforms(vic, vic_y, own, own_y, block=4).any()


def test_a7_scores_the_reordered_images_of_block_scrambling():
    from types import SimpleNamespace

    from visualmixer.eval.attacks.registry import AttackContext
    from visualmixer.eval.attacks.standard import LayoutRecovery
    from visualmixer.eval.methods import parse_method

    own, own_y = _template_images(200, seed=1, c=3)
    vic, vic_y = _template_images(100, seed=2, c=3)
    method = parse_method("scramble:4", seed=3)
    ctx = AttackContext(method=method, protected=method(vic), region=4, labels=vic_y, attacker_images=own,
                        attacker_labels=own_y, num_classes=4, settings=SimpleNamespace(), selected=frozenset({"A7"}))
    est = LayoutRecovery().run(ctx)
    assert set(est) == {"A7", "A7-image"}  # no moved regions: no A7+A5 / A7+A3
    scores = M.image_scores(vic, est["A7-image"])
    assert scores["ssim"]["mean"] > 0.99 and scores["reid"]["rate"] == 1.0, scores
