"""The core's edges: inputs that used to crash, be read wrongly or be silently changed."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import visualmixer as vm
from visualmixer.core import keyed, regions
from visualmixer.core.keyed import ladder_lanes, row_keys
from visualmixer.core.mixing import mix, unmix
from visualmixer.core.regions import MAX_LEVELS, resolve_region, tile_ladder

KEY = vm.Key(bytes(range(32)))


def _batch(n=2, c=3, h=40, w=36, seed=0):
    g = torch.Generator().manual_seed(seed)
    smooth = (torch.arange(h).view(1, 1, -1, 1) * 3 + torch.arange(w).view(1, 1, 1, -1) * 5).expand(n, c, h, w)
    return (smooth + torch.randint(0, 40, (n, c, h, w), generator=g)).to(torch.uint8)


@pytest.mark.parametrize("view", ["transpose", "rot90", "strided", "channels_last"])
def test_strided_views_give_the_bytes_of_their_contiguous_copy(view):
    base = _batch(h=40, w=40) if view in ("transpose", "rot90") else _batch(h=80, w=72)
    x = {"transpose": lambda t: t.mT, "rot90": lambda t: torch.rot90(t, 1, (2, 3)),
         "strided": lambda t: t[:, :, ::2, ::2],
         "channels_last": lambda t: t.to(memory_format=torch.channels_last)}[view](base)
    dense = x.contiguous()
    res, ref = vm.obfuscate(x, key=KEY, ids=[0, 1]), vm.obfuscate(dense, key=KEY, ids=[0, 1])
    assert torch.equal(res.images, ref.images) and torch.equal(res.vfe, ref.vfe)
    assert torch.equal(vm.restore(res.images, res.plans, key=KEY, ids=[0, 1]), dense)
    assert torch.equal(vm.vfe(x), vm.vfe(dense))
    assert torch.equal(vm.spectral_residual(x), vm.spectral_residual(dense))


@pytest.mark.parametrize("layout", ["channels_last", "nhwc_permuted", "numpy_hw1"])
def test_grey_batches_that_torch_calls_contiguous_with_other_strides(layout):
    """A size-1 channel axis makes torch call these contiguous (``.contiguous()`` keeps their
    strides), but the kernels' integer views need row-major strides."""
    base = _batch(n=2, c=1, h=28, w=28)
    if layout == "numpy_hw1":
        x, ids, dense = np.empty((28, 28, 1), np.uint8), [0], base[:1]  # strides (28, 1, 1)
        x[...] = base[0].permute(1, 2, 0).numpy()
    else:
        nhwc = base.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format)  # as loaded from (N, H, W, 1)
        x = {"channels_last": base.to(memory_format=torch.channels_last),
             "nhwc_permuted": nhwc.permute(0, 3, 1, 2)}[layout]
        ids, dense = [0, 1], base
    assert x.stride() != dense.stride() if layout != "numpy_hw1" else x.shape == (28, 28, 1)
    res, ref = vm.obfuscate(x, key=KEY, ids=ids), vm.obfuscate(dense, key=KEY, ids=ids)
    got = torch.as_tensor(res.images).permute(2, 0, 1)[None] if layout == "numpy_hw1" else res.images
    assert torch.equal(got, ref.images)
    back = vm.restore(res.images, res.plans, key=KEY, ids=ids)
    assert torch.equal(torch.as_tensor(back).permute(2, 0, 1)[None] if layout == "numpy_hw1" else back, dense)
    if layout == "channels_last":  # restore of a grey channels-last batch, and mixing
        assert torch.equal(vm.restore(ref.images.to(memory_format=torch.channels_last), ref.plans,
                                      key=KEY, ids=ids), dense)
        mixed = mix(x, [0, 0], key=KEY, ids=ids, k=2)
        assert torch.equal(unmix(mixed.images, mixed.groups, mixed.plans, key=KEY, ids=ids), dense)


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr", "LAB", "HSV", "P"])
def test_pil_images_in_other_modes_are_read_and_restored_as_their_rgb_conversion(mode):
    """As documented in to_batch (and as the folder tools do): a training transform must not
    fail on the CMYK JPEGs real data sets hold."""
    img = Image.fromarray(np.asarray(_batch(n=1, c=3)[0].permute(1, 2, 0))).convert(mode)
    res = vm.obfuscate(img, key=KEY, ids=[0])
    back = vm.restore(res.images, res.plans, key=KEY, ids=[0])
    assert back.mode == "RGB" and np.array_equal(np.asarray(back), np.asarray(img.convert("RGB")))


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_pil_images_wider_than_8_bits_are_refused_not_rounded(mode):
    wide = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60
    img = Image.fromarray(wide).convert(mode) if mode != "I;16" else Image.fromarray(wide)
    assert img.mode == mode
    with pytest.raises(TypeError, match=f"images is a PIL image in mode '{mode}'.*8 bits"):
        vm.obfuscate(img, key=KEY, ids=[0])


def test_numpy_channels_first_is_refused_with_the_callers_shape():
    with pytest.raises(ValueError, match=r"numpy shape \(3, 32, 32\).*transpose"):
        vm.obfuscate(np.zeros((3, 32, 32), np.uint8), key=KEY, ids=[0])


@pytest.mark.parametrize("ids", [{"a.png", "b.png"}, frozenset({1, 2}), {"a.png": 0, "b.png": 1}, {1: 0, 2: 1}.keys()])
def test_unordered_ids_are_refused(ids):
    with pytest.raises(TypeError, match="ids must be an ordered sequence"):
        vm.obfuscate(_batch(), key=KEY, ids=ids)


def test_numpy_scalars_are_accepted_where_python_numbers_are():
    x = _batch(n=1)
    ref = vm.obfuscate(x, key=KEY, ids=[3], target_vfe=0.5, region=4)
    res = vm.obfuscate(x, key=KEY, ids=np.int64(3), target_vfe=np.float32(0.5), region=np.int64(4))
    assert torch.equal(res.images, ref.images) and res.plans.region == 4 and type(res.plans.region) is int


def test_mixing_takes_the_ids_obfuscate_takes():
    x = _batch(n=4, h=32, w=32)
    ref = mix(x, [0, 0, 1, 1], key=KEY, ids=[0, 1, 2, 3], k=2)
    for ids in (np.arange(4), torch.arange(4), [np.int64(i) for i in range(4)]):
        res = mix(x, [0, 0, 1, 1], key=KEY, ids=ids, k=2)
        assert torch.equal(res.images, ref.images)
        assert torch.equal(unmix(res.images, res.groups, res.plans, key=KEY, ids=ids), x)
    tuples = mix(x, [0, 0, 1, 1], key=KEY, ids=[(i, 0) for i in range(4)], k=2)  # numpy ints inside tuples
    again = mix(x, [0, 0, 1, 1], key=KEY, ids=[(np.int64(i), np.int32(0)) for i in range(4)], k=2)
    assert torch.equal(again.images, tuples.images)
    with pytest.raises(TypeError, match=r"images must be an \(N, C, H, W\) torch.Tensor, got ndarray"):
        mix(x.numpy(), [0, 0, 1, 1], key=KEY, ids=range(4), k=2)


def test_mix_groups_and_saliency_weights_behave_like_values_and_sequences():
    from visualmixer.core.mixgroups import MixGroups

    x = _batch(n=4, h=32, w=32)
    groups = mix(x, [0, 0, 1, 1], key=KEY, ids=range(4), k=2).groups
    copy = MixGroups.from_dict(groups.to_dict())
    assert copy == groups and hash(copy) == hash(groups) and copy != "groups"
    assert MixGroups(groups.members.flip(0), groups.region, groups.k) != groups
    weights = vm.saliency_weights(x)
    for index in (1, np.int64(1), torch.tensor(1)):
        assert torch.equal(weights[index].weights, weights.weights[1:2])
    with pytest.raises(IndexError, match="out of range"):
        weights[4]


def test_restore_takes_plans_levels_of_any_integer_dtype_and_strides():
    x = _batch(n=4)
    res = vm.obfuscate(x, key=KEY, ids=range(4))
    p = res.plans
    levels = p.levels.long().transpose(1, 2).contiguous().transpose(1, 2)  # the same values, other strides
    plans = vm.Plans(levels, p.region, p.height, p.width, p.channels, p.channel_order, p.generator)
    assert torch.equal(vm.restore(res.images, plans, key=KEY, ids=range(4)), x)


def test_plans_index_like_a_sequence_and_compare_by_value():
    x = _batch(n=4)
    res = vm.obfuscate(x, key=KEY, ids=range(4))
    plans = res.plans
    for index in (1, np.int64(1), torch.tensor(1)):
        one = plans[index]
        assert len(one) == 1 and torch.equal(vm.restore(res.images[1:2], one, key=KEY, ids=[1]), x[1:2])
    assert len(plans[-1]) == 1 and len(plans[1:3]) == 2
    with pytest.raises(IndexError, match="out of range"):
        plans[4]
    copy = vm.Plans.from_dict(plans.to_dict())
    assert copy == plans and hash(copy) == hash(plans) and copy is not plans
    assert plans[0:2] != plans and plans != "plans"
    assert pickle.loads(pickle.dumps(plans)) == plans


@pytest.mark.parametrize("field, value, match", [
    ("channel_order", "false", "channel_order"),
    ("channels", 4, "channels"),
    ("channels", 2, "channels"),
    ("height", 32.9, "height"),
    ("height", -5, "height"),
    ("width", True, "width"),
    ("region", 1000, "region"),
    ("levels", ["!" * 90, "0" * 90], "levels hold"),
    ("levels", "0" * 90, "list of strings"),
])
def test_plans_from_dict_names_the_bad_field(field, value, match):
    data = vm.obfuscate(_batch(), key=KEY, ids=[0, 1]).plans.to_dict()
    with pytest.raises(ValueError, match=match):
        vm.Plans.from_dict({**data, field: value})


def test_plans_from_dict_checks_the_level_strings_before_building_a_huge_grid():
    data = {**vm.obfuscate(_batch(), key=KEY, ids=[0, 1]).plans.to_dict(), "region": 1, "height": 10**7,
            "width": 10**7}
    with pytest.raises(ValueError, match="100000000000000 regions of side 1, more than any plans hold"):
        vm.Plans.from_dict(data)
    with pytest.raises(ValueError, match="more than any plans hold"):  # no level string to measure
        vm.Plans.from_dict({**data, "levels": []})


def test_region_sides_with_more_levels_than_generator_2_keys_are_refused():
    deep = [r for r in range(1, 257) if len(tile_ladder(r)) > MAX_LEVELS]
    assert deep == [120, 168, 180, 210, 216, 240, 252]
    for side in deep:
        with pytest.raises(ValueError, match=f"region {side} has .* at most {MAX_LEVELS}"):
            resolve_region(side, 1, 1)
    with pytest.raises(ValueError, match="region 120"):
        vm.obfuscate(_batch(n=1, h=130, w=130), key=KEY, ids=[0], region=120)
    with pytest.raises(ValueError, match="region 240"):
        vm.VisualMixer(target_vfe=0.5, region=240)


def test_every_allowed_side_keys_each_level_channel_and_the_channel_order_apart():
    """Generator 2's counter ``region * 64 + lane``: distinct lanes below 64 for every allowed side."""
    words = keyed.key_words([bytes(32)], "cpu").expand(2, 8)
    for side in (r for r in range(1, 257) if len(tile_ladder(r)) <= MAX_LEVELS):
        lanes = ladder_lanes(range(len(tile_ladder(side))), 3, "cpu")
        assert lanes.unique().numel() == lanes.numel() and int(lanes.max()) < 64
    a_top, _ = row_keys(words, torch.tensor([7, 7]), MAX_LEVELS - 1, 3)
    a_order, _ = row_keys(words, torch.tensor([7, 7]), keyed._CHANNEL_PURPOSE, 1)
    assert not torch.isin(a_order, a_top).any()


def test_plans_of_a_deep_side_made_before_the_limit_still_restore(monkeypatch):
    x = _batch(n=1, h=130, w=130)
    monkeypatch.setattr(regions, "MAX_LEVELS", 64)  # as obfuscate allowed before
    res = vm.obfuscate(x, key=KEY, ids=["old"], region=120, target_vfe=0.9)
    monkeypatch.undo()
    stored = vm.Plans.from_dict(res.plans.to_dict())
    assert torch.equal(vm.restore(res.images, stored, key=KEY, ids=["old"]), x)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"region": 0}, ValueError, "region must be"),
    ({"region": 120}, ValueError, "region 120"),
    ({"key": None}, TypeError, "key must be a visualmixer.Key"),
    ({"key": b"0" * 32}, TypeError, "key must be a visualmixer.Key"),
])
def test_mix_names_a_bad_region_or_key(kwargs, exc, match):
    x = _batch(n=6, h=32, w=32)
    args = {"key": KEY, **kwargs}
    with pytest.raises(exc, match=match):
        mix(x, [0] * 6, ids=range(6), k=2, **args)


def test_mix_with_a_numpy_region_round_trips():
    x = _batch(n=6, h=32, w=32)
    res = mix(x, [0, 0, 0, 1, 1, 1], key=KEY, ids=range(6), k=3, region=np.int64(8))
    assert res.groups.region == 8
    assert torch.equal(unmix(res.images, res.groups, res.plans, key=KEY, ids=range(6)), x)


def test_images_with_more_regions_than_the_key_counter_holds_are_refused():
    """Generator 2 keys a region by ``region * 64 + lane`` in int32: past 2**25 regions it would wrap."""
    from visualmixer.core.regions import MAX_REGIONS

    assert MAX_REGIONS * 64 <= 2**31
    assert resolve_region(2, 8192, 8192) == 2 and resolve_region(None, 16384, 16384) == 16
    with pytest.raises(ValueError, match="67108864 regions of side 2.*use region >= 3"):
        resolve_region(2, 16384, 16384)


def test_a_per_window_saliency_map_weighs_as_vfe_weighs_it_also_at_partial_windows():
    """30² with 4-px windows: the last row and column of windows are 2 px wide. The achieved VFE
    must be what ``vm.vfe`` gives the output with the same map."""
    x = _batch(n=2, h=30, w=30)
    per_window = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = vm.obfuscate(x, key=KEY, ids=[0, 1], saliency=per_window)
    assert torch.equal(res.vfe, vm.vfe(res.images, saliency=per_window))
    assert torch.equal(vm.saliency_weights(x, saliency=per_window).weights, per_window)


@pytest.mark.parametrize("h, w, region", [(30, 30, None), (200, 200, None), (12, 12, 8), (30, 22, 4), (31, 31, 14)])
def test_every_region_of_more_than_one_pixel_changes_even_at_target_0(h, w, region):
    """A corner region whose sides both divide the level-1 tile is one tile at level 1 (nothing
    would move; a grey image has no channel order): it starts at its first level with two tiles."""
    from visualmixer.core.regions import to_regions

    x = (torch.arange(h * w) % 251).view(1, 1, h, w).to(torch.uint8).repeat(2, 1, 1, 1)  # distinct per region
    x[1] = torch.randint(0, 256, (1, h, w), generator=torch.Generator().manual_seed(1))
    res = vm.obfuscate(x, key=KEY, ids=[0, 1], target_vfe=0.0, region=region)
    grid = res.plans.grid
    sizes = torch.tensor([a * b for a, b in grid.kind_sizes])[grid.kinds]
    same = (to_regions(x, grid) == to_regions(res.images, grid)).flatten(2).all(-1)  # (N, regions)
    assert not same[:, sizes > 1].any()
    assert torch.equal(vm.restore(res.images, res.plans, key=KEY, ids=[0, 1]), x)


def test_make_groups_and_mix_refuse_what_they_cannot_group():
    """make_groups checks as mix does (before: k = 1 / -2 made groups of one, float labels were
    truncated into one class, k = 0 raised ZeroDivisionError); empty images name ``images``."""
    from visualmixer.core.mixgroups import make_groups

    def groups(labels=(0, 0, 1, 1), ids=range(4), **kw):
        return make_groups(labels, key=KEY, ids=ids, height=16, width=16, **{"k": 2, **kw})

    for k in (0, 1, -2, 2.5, True):
        with pytest.raises(ValueError, match="k must be an integer >= 2"):
            groups(k=k)
    assert groups(k=np.int64(2)).k == 2 and type(groups(k=np.int64(2)).k) is int
    with pytest.raises(TypeError, match="labels must be integer class labels"):
        groups(labels=[0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="ids must hold 4 distinct image ids, got 3"):
        groups(ids=[1, 1, 2, 3])
    for shape in ((0, 3, 16, 16), (2, 3, 16, 0)):
        with pytest.raises(ValueError, match=r"images is empty"):
            mix(torch.zeros(shape, dtype=torch.uint8), [0] * shape[0], key=KEY, ids=range(shape[0]), k=2)
    res = mix(_batch(n=4, h=16, w=16), [0, 0, 1, 1], key=KEY, ids=range(4), k=2)
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\); got \(3, 16, 16\)"):
        unmix(res.images[0], res.groups, res.plans, key=KEY, ids=range(4))


def test_mix_groups_records_round_trip_and_refuse_damage():
    from visualmixer.core.mixgroups import MixGroups

    x = _batch(n=6, h=16, w=16)
    for kw in ({"share": 0.5}, {"balanced": True}, {"balanced": True, "design": "cyclic"}):
        groups = mix(x, [0, 0, 0, 1, 1, 1], key=KEY, ids=range(6), k=3, **kw).groups
        back = MixGroups.from_dict(groups.to_dict())
        assert back == groups and hash(back) == hash(groups) and back.to_dict() == groups.to_dict()
    record = groups.to_dict()
    for damaged, message in ((None, "not a mix groups record"), ({"version": 1}, "not a mix groups record"),
                             ({**record, "region": 0}, "region must be an integer >= 1"),
                             ({**record, "k": 0}, "k must be an integer >= 2"),
                             ({**record, "grouping": "bogus"}, "grouping must be one of")):
        with pytest.raises(ValueError, match=message):
            MixGroups.from_dict(damaged)


def test_similar_grouping_whatever_the_default_dtype():
    x = _batch(n=4, h=16, w=16)
    ref = mix(x, [0, 0, 1, 1], key=KEY, ids=range(4), k=2, grouping="similar")
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        res = mix(x, [0, 0, 1, 1], key=KEY, ids=range(4), k=2, grouping="similar")
    finally:
        torch.set_default_dtype(before)
    assert torch.equal(res.images, ref.images) and res.groups == ref.groups
