import pytest

from visualmixer.core.regions import default_region, region_grid, tile_ladder


def test_default_region_rule():
    assert default_region(224, 224) == 16
    assert default_region(128, 1000) == 16
    assert default_region(127, 1000) == 8
    assert default_region(48, 48) == 8
    assert default_region(47, 200) == 4
    assert default_region(1, 1) == 4


def test_ladders():
    assert tile_ladder(16) == [16, 8, 4, 2, 1]
    assert tile_ladder(4) == [4, 2, 1]
    assert tile_ladder(14) == [14, 7, 2, 1]
    assert tile_ladder(1) == [1]
    with pytest.raises(ValueError, match="region must be a positive int, got 0"):
        tile_ladder(0)


def test_grid_covers_every_pixel_once():
    grid = region_grid(30, 45, 8)
    assert (grid.rows, grid.cols) == (4, 6)
    areas = [grid.kind_sizes[k][0] * grid.kind_sizes[k][1] for k in grid.kinds.tolist()]
    assert sum(areas) == 30 * 45


@pytest.mark.parametrize("a, b", [(16, 16), (16, 5), (3, 16), (12, 10)])
def test_tiles_cover_partial_regions(a, b):
    grid = region_grid(a, b, 16)
    kind = int(grid.kinds[0])
    for level in range(grid.levels + 1):
        t = grid.table(kind, level)
        assert a % t.tile_h == 0 and b % t.tile_w == 0
        assert t.ntiles == (a // t.tile_h) * (b // t.tile_w)
    assert grid.table(kind, 0).ntiles == 1
    assert grid.table(kind, grid.levels).ntiles == a * b
