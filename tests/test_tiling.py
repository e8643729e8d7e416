"""Tile plans, blend weights and seams: pure functions, no model."""

import numpy as np
import pytest

from diip_deploy.runtime.images.tiling import Blender, axis_starts, border_mask, cut, plan_tiles, tile_seed

SIZES = [(64, 64), (65, 64), (100, 37), (8, 200), (12, 12), (384, 512), (130, 250)]


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("tile,overlap", [(64, 16), (64, 0), (32, 8), (16, 8), (0, 16)])
def test_plan_covers_every_pixel_with_equal_tiles(h, w, tile, overlap):
    plan = plan_tiles(h, w, tile, overlap)
    covered = np.zeros((h, w), dtype=int)
    for t in plan.tiles:
        assert (t.h, t.w) == (plan.tile_h, plan.tile_w)  # one shape: tiles batch
        assert t.y >= 0 and t.x >= 0 and t.y + t.h <= h and t.x + t.w <= w
        covered[t.window] += 1
    assert covered.min() >= 1
    if tile == 0 or (h <= tile and w <= tile):
        assert len(plan) == 1 and (plan.tile_h, plan.tile_w) == (h, w)


@pytest.mark.parametrize(
    "length,tile,overlap", [(512, 64, 16), (100, 64, 16), (65, 64, 16), (1000, 48, 12), (64, 64, 16)]
)
def test_neighbours_overlap_by_at_least_the_overlap(length, tile, overlap):
    starts = axis_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == max(length, tile)
    gaps = np.diff(starts)
    assert np.all(gaps <= tile - overlap) and np.all(gaps > 0)


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("tile,overlap", [(64, 16), (32, 8), (16, 8), (64, 0)])
def test_blend_weights_sum_to_one_everywhere(h, w, tile, overlap):
    """Blending tiles that are all ones gives one everywhere: the weights sum to 1."""
    plan = plan_tiles(h, w, tile, overlap)
    b = Blender(plan, 1)
    for i, t in enumerate(plan.tiles):
        b.add(i, np.ones((1, t.h, t.w), dtype=np.float32))
    np.testing.assert_allclose(b.result(), 1.0, atol=1e-6)


def test_blender_reassembles_an_image_exactly_in_any_order():
    rng = np.random.default_rng(0)
    img = rng.uniform(-1, 1, (3, 100, 130)).astype(np.float32)
    plan = plan_tiles(100, 130, 32, 8)
    tiles = cut(img, plan.tiles)
    b = Blender(plan, 3)
    for i in rng.permutation(len(plan)):
        b.add(int(i), tiles[i])
    np.testing.assert_allclose(b.result(), img, atol=1e-5)


def test_window_is_smooth_across_an_overlap():
    """Blending two different constant tiles gives a monotone ramp, not a step."""
    plan = plan_tiles(16, 48, 32, 16)
    assert len(plan) == 2
    b = Blender(plan, 1)
    b.add(0, np.zeros((1, 16, 32), np.float32))
    b.add(1, np.ones((1, 16, 32), np.float32))
    row = b.result()[0, 8]
    steps = np.diff(row)
    assert np.all(steps >= -1e-7) and steps.max() < 0.15  # sin^2 over 16 px: no jump


def test_tile_seeds_depend_on_seed_and_position_only():
    a, b = plan_tiles(100, 100, 32, 8), plan_tiles(100, 100, 32, 8)
    assert [tile_seed(3, t) for t in a.tiles] == [tile_seed(3, t) for t in b.tiles]
    assert len({tile_seed(3, t) for t in a.tiles}) == len(a)
    assert tile_seed(3, a.tiles[0]) != tile_seed(4, a.tiles[0])


def test_bad_overlap_refused():
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(100, 100, 32, 17)
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(100, 100, 32, -1)


def test_border_mask_marks_tile_edges_only():
    plan = plan_tiles(64, 112, 64, 16)  # two tiles side by side: x = 0 and 48
    cols, rows = border_mask(plan)
    assert not rows.any()  # one tile row: no horizontal edges inside the image
    marked = np.nonzero(cols[0])[0]
    assert set(marked) == {47, 48, 63, 64}  # differences across x = 48 and x = 64


@pytest.mark.parametrize(
    "h,w,max_tiles", [(384, 512, 256), (3000, 4000, 256), (384, 512, 9), (100, 100, 1), (64, 64, 4)]
)
def test_regions_partition_the_tiles_into_bounded_blocks(h, w, max_tiles):
    from diip_deploy.runtime.images.tiling import plan_regions, sub_plan

    plan = plan_tiles(h, w, 64, 16)
    regions = plan_regions(plan, max_tiles)
    flat = sorted(i for r in regions for i in r)
    assert flat == list(range(len(plan)))
    assert all(0 < len(r) <= max_tiles for r in regions)
    if len(plan) <= max_tiles:
        assert len(regions) == 1
    for r in regions:  # each region is a compact block: its local plan covers its bounding box
        local = sub_plan(plan, r)
        covered = np.zeros((local.height, local.width), bool)
        for t in local.tiles:
            covered[t.window] = True
        assert covered.all()
