"""A7's layout matcher on colour images with no strong positional anchor (the pooled jigsaw)."""

import pytest
import torch
import torch.nn.functional as F

from visualmixer.eval.attacks.a7_layout import (
    recover_block_transforms,
    recover_layout,
    undo_block_transforms,
    undo_layout,
)
from visualmixer.eval.baselines import BlockScramble


def cropped_fields(n: int, seed: int, anchor: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """16×16 colour crops at random positions of smooth random fields (nothing ties a block to a
    position), plus a faint class template (``anchor``: the only hint of which way is up)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    field = F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(48, 48), mode="bilinear", align_corners=False)
    off = torch.randint(0, 32, (n, 2), generator=g)
    rows = (off[:, 0, None] + torch.arange(16))[:, :, None].expand(n, 16, 16)
    cols = (off[:, 1, None] + torch.arange(16))[:, None, :].expand(n, 16, 16)
    crops = field[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    template = torch.rand(4, 3, 4, 4, generator=torch.Generator().manual_seed(99))
    template = F.interpolate(template, size=(16, 16), mode="bilinear", align_corners=False)
    out = (1 - anchor) * crops + anchor * template[y]
    return (out * 255).round().clamp(0, 255).to(torch.uint8), y


def scrambled(key: int, own_seed: int, victim_seed: int):
    own, own_y = cropped_fields(400, own_seed)
    vic, vic_y = cropped_fields(200, victim_seed)
    scr = BlockScramble(4, key=key)  # EtC: one permutation, turn, mirror, negation, channel order per slot
    released = scr(vic)
    perm, _, _, neg, _ = (t[0] for t in scr._draw(1, 16, 3))
    return released, vic_y, own, own_y, torch.argsort(perm), neg  # true source of each position


@pytest.mark.parametrize(("key", "seeds"), [(7, (1, 2)), (11, (5, 6))])
def test_a7_places_every_slot_of_colour_crops_with_a_faint_anchor(key, seeds):
    released, y, own, own_y, truth, neg = scrambled(key, *seeds)
    src, negated = recover_layout(released, y, own, own_y, block=4)
    assert torch.equal(src, truth), f"{int((src == truth).sum())} of 16 slots placed right"
    assert torch.equal(negated, neg[src])


def test_a7_class_means_alone_misplace_them():
    released, y, own, own_y, truth, _ = scrambled(7, 1, 2)
    src, _ = recover_layout(released, y, own, own_y, block=4, matcher="means")
    assert int((src == truth).sum()) <= 12  # the matcher before the jigsaw: about 11 of 16
    with pytest.raises(ValueError, match="matcher"):
        recover_layout(released, y, own, own_y, block=4, matcher="nope")


def test_a7_jigsaw_needs_no_anchor_for_the_neighbours():
    """Without any class template the layout is found up to a turn or mirror of the whole grid."""
    own, own_y = cropped_fields(400, 1, anchor=0.0)
    vic, vic_y = cropped_fields(200, 2, anchor=0.0)
    scr = BlockScramble(4, key=3, negate=False)
    released = scr(vic)
    truth = torch.argsort(scr._draw(1, 16, 3)[0][0])
    src, _ = recover_layout(released, vic_y, own, own_y, block=4)
    idx = torch.arange(16).view(4, 4)
    maps = [idx, idx.flip(0), idx.flip(1), idx.flip(0).flip(1)]
    maps = [m.reshape(-1) for m in maps + [m.T for m in maps]]
    assert max(int((src[m] == truth).sum()) for m in maps) >= 14


def tinted_shades(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """16×16 colour images: a smooth random shade in a random colour per image (nothing in a
    block's class mean says how it is turned or which channel is which) over a faint colour
    class template (what tells the attacker the colours of the whole image)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    shade = F.interpolate(torch.rand(n, 1, 5, 5, generator=g), size=(16, 16), mode="bilinear", align_corners=True)
    tint = torch.rand(n, 3, 1, 1, generator=g)
    template = torch.rand(4, 3, 2, 2, generator=torch.Generator().manual_seed(99))
    template = F.interpolate(template, size=(16, 16), mode="bilinear", align_corners=True)
    out = 0.9 * shade * tint + 0.1 * template[y]
    return (out * 255).round().clamp(0, 255).to(torch.uint8), y


@pytest.mark.parametrize("key", [0, 3])
def test_a7_pooled_seams_undo_every_slot_transform_of_tinted_images(key):
    """With the layout right, every slot's key-wide turn, mirror, negation and channel order comes
    back (the images exactly), though a random tint hides them from the class-mean blocks."""
    own, own_y = tinted_shades(400, 1)
    vic, y = tinted_shades(200, 2)
    scr = BlockScramble(4, key=key)  # per_image=False: one key-wide scramble
    perm, _, _, neg, _ = (t[0] for t in scr._draw(1, 16, 3))
    source = torch.argsort(perm)
    moved = undo_layout(scr(vic), source, neg[source], block=4)
    which = recover_block_transforms(moved, y, own, own_y, block=4)
    est = (undo_block_transforms(moved, which, block=4) * 255).round().to(torch.uint8)
    wrong = (est != vic).reshape(200, 3, 4, 4, 4, 4).any(dim=(0, 1, 3, 5))
    assert not wrong.any(), f"{int(wrong.sum())} of 16 slots keep a wrong transform"
    means_only = recover_block_transforms(moved, y, own, own_y, block=4, seams=False)
    assert int((means_only != which).sum()) >= 4  # the class means alone get many of them wrong


def test_a7_falls_back_to_class_means_where_all_blocks_move_together():
    """One class whose blocks all brighten and darken together: the correlations (near rank one)
    say nothing about neighbours, so the class means place the slots alone."""
    template = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(99))
    template = template.repeat_interleave(4, 2).repeat_interleave(4, 3)

    def together(n, seed):
        g = torch.Generator().manual_seed(seed)
        a = 0.5 + 0.5 * torch.rand(n, 1, 1, 1, generator=g)
        return template * a + 0.01 * torch.rand(n, 1, 16, 16, generator=g), torch.zeros(n, dtype=torch.long)

    own, own_y = together(400, 105)
    vic, y = together(200, 205)
    scr = BlockScramble(4, key=5, rotate=False)
    src, _ = recover_layout(scr(vic), y, own, own_y, block=4)
    assert torch.equal(src, torch.argsort(scr._draw(1, 16, 1)[0][0]))


@pytest.mark.parametrize("shape", [(40, 3, 8, 16), (40, 1, 16, 8), (40, 3, 8, 8)])
def test_a7_handles_grids_of_one_and_two_slots(shape):
    # the jigsaw's spectral starts need three slots: a 2-block grid crashed the matcher
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    x = torch.rand(shape, generator=g)
    source, negated = recover_layout(x, y, torch.rand(shape, generator=g), y, block=8)
    assert sorted(source.tolist()) == list(range(shape[2] // 8 * shape[3] // 8)) and negated.shape == source.shape
