"""The fused and iteration graphs bake in the export's default clamp gradient (issue 26):
an export whose defaults say ``--clamp-gradient straight`` traces them straight-through,
verifies them against torch autograd through a straight-through clamp, records it in the
manifest, and the runtime opens them only for runs that ask for what they hold."""

import json

import numpy as np
import pytest
import torch
from conftest import export_tiny

from diip_deploy.export.reference import loss_and_grad
from diip_deploy.export.verify import rel_l2
from diip_deploy.runtime import RestoreSettings, load_manifest, open_chain
from diip_deploy.runtime.optimise.chain import chain_forward
from diip_deploy.runtime.optimise.loop import restore_iter
from diip_deploy.runtime.restorer import Restorer

TOL = 1e-4
BAKED = ("chain_exact", "chain_surrogate", "iterate_surrogate")


@pytest.fixture(scope="module")
def straight_export(tiny_pipeline, tmp_path_factory):
    return export_tiny(
        tiny_pipeline, tmp_path_factory.mktemp("straight_export"), "surrogate", clamp_gradient="straight"
    )


def _saturated(size=16, seed=4):
    """A start that puts the chain's x0 on the clamp over part of the image, and a target
    away from it there: where the mask passes no gradient."""
    rng = np.random.default_rng(seed)
    z = 4.0 * rng.standard_normal((2, 3, size, size))
    y = 0.5 * rng.uniform(-1, 1, (2, 3, size, size))
    return z.astype(np.float32), y.astype(np.float32)


def test_the_manifest_records_what_each_baked_graph_holds(straight_export):
    man = json.loads((straight_export / "manifest.json").read_text())
    assert man["defaults"]["clamp_gradient"] == "straight"
    for name in BAKED:
        assert man["graphs"][name]["clamp_gradient"] == "straight", name
        v = man["verification"][name]
        assert v["passed"] and v["clamp_gradient"] == "straight", name
    assert "clamp_gradient" not in man["graphs"]["unet"] and "clamp_gradient" not in man["graphs"]["unet_vjp"]


@pytest.mark.parametrize("gradient", ["exact", "surrogate"])
def test_straight_fused_chain_matches_autograd_and_passes_the_clamp(straight_export, tiny_torch, gradient):
    """The straight-through fused graph against torch autograd and against the per-step
    graphs' straight-through gradient; where x0 sits on the clamp its gradient is not zero."""
    eps_model, spec = tiny_torch
    m = load_manifest(straight_export)
    z, y = _saturated()
    fused = open_chain(m, "ort-cpu", gradient, clamp_gradient="straight")
    per_step = open_chain(m, "ort-cpu", gradient, prefer_fused=False, clamp_gradient="straight")
    assert fused.uses_fused and not per_step.uses_fused
    x0_f, loss_f, grad_f = fused.loss_and_grad(z, y)
    x0_p, loss_p, grad_p = per_step.loss_and_grad(z, y)
    _, states = chain_forward(per_step.eps, z, m.chain_spec)
    on_clamp = ~states[-1][1]
    assert 0.05 < on_clamp.mean() < 0.95, on_clamp.mean()
    assert np.mean(grad_f[on_clamp] != 0) > 0.99
    x0_t, _, grad_t = loss_and_grad(eps_model, torch.from_numpy(z), torch.from_numpy(y), spec, gradient, straight=True)
    _, _, grad_mask = loss_and_grad(eps_model, torch.from_numpy(z), torch.from_numpy(y), spec, gradient)
    assert rel_l2(x0_f, x0_t.numpy()) <= TOL and rel_l2(grad_f, grad_t.numpy()) <= TOL
    assert rel_l2(grad_f, grad_p) <= TOL and rel_l2(loss_f, loss_p) <= TOL
    assert rel_l2(grad_f, grad_mask.numpy()) > 1e-2  # it is not the mask's gradient
    # a run asking for the mask does not get the straight-through graph: the per-step one
    masked = open_chain(m, "ort-cpu", gradient)
    assert not masked.uses_fused and rel_l2(masked.loss_and_grad(z, y)[2], grad_mask.numpy()) <= TOL


def test_straight_device_loop_matches_the_host_loop(straight_export):
    """The iteration graph traced straight-through against the host loop on the per-step
    graph: same stops, same reconstructions; the Restorer picks it for a straight-through
    run and refuses it, with a reason, for a run asking for the mask."""
    m = load_manifest(straight_export)
    _, y = _saturated()
    ys = np.concatenate([y, 0.8 * y, -y])
    cfg = RestoreSettings(lr=0.05, max_iters=15, stop="auto", k_min=4, clamp_gradient="straight")
    host = open_chain(m, "ort-cpu", "surrogate", 1, prefer_fused=False, clamp_gradient="straight")
    dev = open_chain(m, "ort-cpu", "surrogate", 1, loop_graph="iterate_surrogate", clamp_gradient="straight")
    seeds = [(0, i) for i in range(len(ys))]
    want = dict(restore_iter(host, ys, cfg, seeds, batch=2))
    got = dict(restore_iter(dev, ys, cfg, seeds, batch=2))
    for i in want:
        assert got[i].stop_iteration == want[i].stop_iteration
        np.testing.assert_allclose(got[i].x0, want[i].x0, atol=1e-4)
        np.testing.assert_allclose(got[i].history["loss"], want[i].history["loss"], rtol=1e-4)
    one = dict(steps_per_eval=1, lr_final=1.0)
    with Restorer(straight_export, "ort-cpu", 1, loop="device", clamp_gradient="straight", **one) as r:
        assert r.loop == "device" and "iterate_surrogate" in r.chain.runners
    with pytest.raises(ValueError, match="traced with --clamp-gradient straight, this run asks for mask"):
        Restorer(straight_export, "ort-cpu", 1, loop="device", clamp_gradient="mask", **one)
    with Restorer(straight_export, "ort-cpu", 1, loop="auto", clamp_gradient="mask", **one) as r:
        assert r.loop == "host" and set(r.chain.runners) == {"unet"}
