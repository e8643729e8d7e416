"""The batch-native loop: per-sample state, samples leaving and joining the batch."""

from dataclasses import replace

import numpy as np
import pytest
from images import smooth_image

from diip_deploy.runtime import RestoreSettings, load_manifest, open_chain, restore
from diip_deploy.runtime.images.tiling import Blender, cut, plan_tiles, tile_seed
from diip_deploy.runtime.optimise.joint import restore_joint


def _ys(n, size=16):
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        clean = smooth_image(size, size, seed=i)
        out.append(np.clip(clean + rng.normal(0, 0.05 + 0.05 * (i % 3), clean.shape), 0, 1).transpose(2, 0, 1) * 2 - 1)
    return np.stack(out).astype(np.float32)


CFG = RestoreSettings(lr=0.05, max_iters=14, stop="auto", eps=2e-2, slope_window=2, k_min=3, seed=5)
MIXED = RestoreSettings(lr=0.05, max_iters=14, stop="slope", eps=1e-2, slope_window=1, seed=5)  # stops at 8-14


@pytest.mark.parametrize("gradient", ["surrogate", "exact"])
@pytest.mark.parametrize("n,batch", [(1, 1), (3, 3), (7, 7), (7, 3), (7, 2)])
def test_batch_equals_each_sample_alone(tiny_export, gradient, n, batch):
    chain = open_chain(load_manifest(tiny_export), "ort-cpu", gradient, prefer_fused=False)
    ys = _ys(n)
    seeds = [(5, i) for i in range(n)]
    cfg = replace(MIXED, gradient=gradient)
    together = restore(chain, ys, cfg, seeds=seeds, batch=batch)
    alone = [restore(chain, ys[i : i + 1], cfg, seeds=[seeds[i]])[0] for i in range(n)]
    for t, a in zip(together, alone):
        assert (t.stop_iteration, t.stop_reason, t.iterations_run) == (
            a.stop_iteration,
            a.stop_reason,
            a.iterations_run,
        )
        np.testing.assert_allclose(t.x0, a.x0, atol=1e-6)
        np.testing.assert_allclose(t.history["loss"], a.history["loss"], rtol=1e-6)
    if n == 7:  # the test means something only if samples leave the batch at different times
        assert len({r.iterations_run for r in together}) > 1


def test_exact_gradient_scaling_is_per_sample(tiny_export):
    """A sample with a huge cotangent next to a tiny one: each gets its own power-of-two scale."""
    chain = open_chain(load_manifest(tiny_export), "ort-cpu", "exact", prefer_fused=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    cot = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    cot[0] *= 1e6
    cot[1] *= 1e-6
    both = chain.vjp(x, 500, cot)
    for i in range(2):
        np.testing.assert_allclose(both[i], chain.vjp(x[i : i + 1], 500, cot[i : i + 1])[0], rtol=1e-5)


def test_joint_stop_independent_of_batch_and_order(tiny_export):
    chain = open_chain(load_manifest(tiny_export), "ort-cpu", "surrogate")
    img = (smooth_image(40, 40) * 2 - 1).transpose(2, 0, 1).astype(np.float32)
    plan = plan_tiles(40, 40, 16, 4)
    tiles = cut(img, plan.tiles)
    seeds = [tile_seed(0, t) for t in plan.tiles]
    runs = [restore_joint(chain, tiles, CFG, Blender(plan, 3), seeds, batch) for batch in (1, 4, len(plan))]
    for r in runs[1:]:
        assert (r.stop_iteration, r.stop_reason) == (runs[0].stop_iteration, runs[0].stop_reason)
        np.testing.assert_allclose(r.x0, runs[0].x0, atol=1e-6)


def test_nonfinite_input_sample_named(tiny_export):
    from diip_deploy.runtime import NonFiniteError

    chain = open_chain(load_manifest(tiny_export), "ort-cpu", "surrogate")
    ys = _ys(3)
    ys[2, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="sample 2"):
        restore(chain, ys, CFG, batch=2)


@pytest.mark.parametrize("n,batch", [(7, 3), (7, 7)])
def test_steps_on_reused_eps_keep_samples_independent(tiny_export, n, batch):
    """Each sample reuses its own rows of an evaluation's eps, whoever shares the batch and
    whenever the others leave it; the joint loop likewise whatever the batch."""
    chain = open_chain(load_manifest(tiny_export), "ort-cpu", "surrogate", prefer_fused=False)
    ys = _ys(n)
    seeds = [(5, i) for i in range(n)]
    cfg = replace(MIXED, steps_per_eval=2)
    together = restore(chain, ys, cfg, seeds=seeds, batch=batch)
    alone = [restore(chain, ys[i : i + 1], cfg, seeds=[seeds[i]])[0] for i in range(n)]
    for t, a in zip(together, alone):
        assert (t.stop_iteration, t.iterations_run) == (a.stop_iteration, a.iterations_run)
        np.testing.assert_allclose(t.x0, a.x0, atol=1e-6)
    assert len({r.iterations_run for r in together}) > 1
    img = (smooth_image(40, 40) * 2 - 1).transpose(2, 0, 1).astype(np.float32)
    plan = plan_tiles(40, 40, 16, 4)
    tiles, tile_seeds = cut(img, plan.tiles), [tile_seed(0, t) for t in plan.tiles]
    cfg = replace(CFG, steps_per_eval=2)
    runs = [restore_joint(chain, tiles, cfg, Blender(plan, 3), tile_seeds, b) for b in (1, batch)]
    assert runs[0].stop_iteration == runs[1].stop_iteration
    np.testing.assert_allclose(runs[1].x0, runs[0].x0, atol=1e-6)
