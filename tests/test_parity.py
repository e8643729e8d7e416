"""The numpy runtime against the torch reference, on the exported tiny model."""

import dataclasses

import numpy as np
import pytest
import torch

from diip_deploy.export.reference import chain, loss_and_grad, reference_restore
from diip_deploy.export.verify import rel_l2
from diip_deploy.runtime import RestoreSettings, load_manifest, open_chain, restore
from diip_deploy.runtime.optimise.samples import initial_latent

TOL = 1e-4


def _inputs(size=16, seed=3):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    y = rng.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    return z, y


def test_manifest_records_verification(tiny_export):
    m = load_manifest(tiny_export)
    assert set(m.graphs) == {"unet", "unet_vjp", "chain_exact", "chain_surrogate", "iterate_exact", "iterate_surrogate"}
    for name, v in m.data["verification"].items():
        assert v["passed"] and v["max_rel_l2"] <= 1e-4, name
    assert m.chain_spec.timesteps == (500, 0)


def test_chain_forward_matches_reference(tiny_export, tiny_torch):
    eps_model, spec = tiny_torch
    z, _ = _inputs(20)
    with torch.no_grad():
        want = chain(eps_model, torch.from_numpy(z), spec).numpy()
    runtime_chain = open_chain(load_manifest(tiny_export), "ort-cpu", "exact", prefer_fused=False)
    assert rel_l2(runtime_chain.forward(z), want) <= TOL


@pytest.mark.parametrize("gradient", ["exact", "surrogate"])
@pytest.mark.parametrize("fused", [False, True])
def test_loss_and_grad_match_autograd(tiny_export, tiny_torch, gradient, fused):
    eps_model, spec = tiny_torch
    z, y = _inputs(20)
    x0_t, loss_t, grad_t = loss_and_grad(eps_model, torch.from_numpy(z), torch.from_numpy(y), spec, gradient)
    c = open_chain(load_manifest(tiny_export), "ort-cpu", gradient, prefer_fused=fused)
    assert c.uses_fused == fused and c.gradient == gradient
    x0, loss, grad = c.loss_and_grad(z, y)
    assert rel_l2(x0, x0_t.numpy()) <= TOL
    assert rel_l2(loss, loss_t.numpy()) <= TOL
    assert rel_l2(grad, grad_t.numpy()) <= TOL


def test_surrogate_differs_from_exact(tiny_export):
    """Guards against both modes silently computing the same thing."""
    z, y = _inputs(16)
    m = load_manifest(tiny_export)
    g_exact = open_chain(m, "ort-cpu", "exact", prefer_fused=False).loss_and_grad(z, y)[2]
    g_sur = open_chain(m, "ort-cpu", "surrogate", prefer_fused=False).loss_and_grad(z, y)[2]
    assert rel_l2(g_sur, g_exact) > 1e-3


@pytest.mark.parametrize(
    "gradient,betas", [("exact", (0.9, 0.999)), ("surrogate", (0.9, 0.999)), ("surrogate", (0.7, 0.99))]
)
def test_twenty_iterations_match_torch_adam(tiny_export, tiny_torch, gradient, betas):
    eps_model, spec = tiny_torch
    _, y = _inputs(16, seed=5)
    b1, b2 = betas
    cfg = RestoreSettings(lr=0.05, gradient=gradient, max_iters=20, stop="none", seed=11, adam_beta1=b1, adam_beta2=b2)
    c = open_chain(load_manifest(tiny_export), "ort-cpu", gradient, prefer_fused=False)
    (result,) = restore(c, y, cfg)
    z0 = torch.from_numpy(initial_latent(y.shape, cfg.seed))
    x0_ref, losses_ref = reference_restore(eps_model, torch.from_numpy(y), z0, spec, 20, cfg.lr, gradient, betas=betas)
    assert result.iterations_run == 20 and result.stop_iteration == 19
    assert rel_l2(result.x0[None], x0_ref.numpy()) <= 1e-3
    assert rel_l2(np.array(result.history["loss"]), np.array(losses_ref)) <= 1e-3
    assert losses_ref[-1] < losses_ref[0], "the loop should reduce the loss"


@pytest.mark.parametrize("gradient", ["exact", "surrogate"])
def test_reference_keeps_every_tensor_on_the_inputs_device(tiny_torch, gradient):
    """Model and inputs on the 'meta' device: any tensor the chain makes on the CPU (the
    CUDA bug: a timestep built on the CPU meeting CUDA weights) raises here too."""
    import copy

    eps_model, spec = tiny_torch
    meta_model = copy.deepcopy(eps_model).to("meta")
    z = torch.zeros(2, 3, 16, 16, device="meta")
    x0, loss, grad = loss_and_grad(meta_model, z, torch.zeros_like(z), spec, gradient)
    assert x0.device.type == loss.device.type == grad.device.type == "meta"
    assert grad.shape == z.shape and loss.shape == (2,)


def test_verification_fails_for_a_graph_of_another_model(tiny_export, tmp_path):
    """verify_graph can say False: the tiny export's UNet checked against a different UNet."""
    from tiny_model import make_tiny_pipeline

    from diip_deploy.export.loading import load_model
    from diip_deploy.export.reference import EpsModel
    from diip_deploy.export.trace import prepare_unet
    from diip_deploy.export.verify import verify_graph
    from diip_deploy.schedule import ChainSpec

    other = load_model(str(make_tiny_pipeline(tmp_path / "other", seed=1)))
    eps_other = EpsModel(prepare_unet(other.unet), other.alphas_cumprod, other.prediction_type).eval()
    spec = ChainSpec.from_table(other.alphas_cumprod, 2)
    v = verify_graph("unet", tiny_export / "unet.onnx", ["sample", "timestep"], eps_other, spec, 3, 20)
    assert v["passed"] is False and v["max_rel_l2"] > 1e-2


def test_export_refuses_when_verification_fails(tiny_pipeline, tmp_path, monkeypatch):
    """With a tolerance no float32 graph meets, the exporter raises and the manifest says why."""
    import json

    import click

    from diip_deploy.export import verify
    from diip_deploy.export.pipeline import export_model

    monkeypatch.setattr(verify, "TOLERANCE", 0.0)
    with pytest.raises(click.ClickException, match="verification failed for unet"):
        export_model(
            str(tiny_pipeline), tmp_path / "x", steps=2, gradient="surrogate", fused="none", log=lambda m: None
        )
    v = json.loads((tmp_path / "x" / "manifest.json").read_text())["verification"]["unet"]
    assert v["passed"] is False and v["max_rel_l2"] > 0.0


def test_io_binding_gives_the_plain_runs_outputs(tiny_export):
    """The IO-binding path (device OrtValues reused across calls, updated in place) on the
    CPU provider: same outputs as session.run, call after call, and across a shape change."""
    from diip_deploy.manifest import load_manifest
    from diip_deploy.runtime.backends.onnxruntime import OrtRunner

    path = load_manifest(tiny_export).graph_path("unet_vjp")
    plain, bound = OrtRunner(path).activate(), OrtRunner(path, io_binding=True).activate()
    rng = np.random.default_rng(0)
    for b, size in ((2, 16), (2, 16), (3, 16), (1, 8)):
        feed = {
            "sample": rng.standard_normal((b, 3, size, size)).astype(np.float32),
            "timestep": rng.integers(0, 1000, b).astype(np.int64),
            "cotangent": rng.standard_normal((b, 3, size, size)).astype(np.float32),
        }
        want, got = plain.infer(feed), bound.infer(feed)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    assert len(bound._bound) == 3
    plain.deactivate(), bound.deactivate()
    with pytest.raises(ValueError, match="ort-cuda"):
        OrtRunner(path, cuda_graph=True)


@pytest.mark.parametrize("steps_per_eval", [2, 3])
def test_steps_on_reused_eps_match_torch(tiny_export, tiny_torch, steps_per_eval):
    """Adam steps through the chain on an evaluation's eps (numpy, no graph call) against
    torch autograd through the same chain with those eps as constants, and torch's Adam."""
    eps_model, spec = tiny_torch
    _, y = _inputs(16, seed=5)
    cfg = RestoreSettings(lr=0.05, max_iters=12, stop="none", seed=11, steps_per_eval=steps_per_eval)
    c = open_chain(load_manifest(tiny_export), "ort-cpu", "surrogate", prefer_fused=False)
    (result,) = restore(c, y, cfg)
    (single,) = restore(c, y, RestoreSettings(lr=0.05, max_iters=12, stop="none", seed=11))
    z0 = torch.from_numpy(initial_latent(y.shape, cfg.seed))
    x0_ref, losses_ref = reference_restore(
        eps_model, torch.from_numpy(y), z0, spec, 12, cfg.lr, "surrogate", steps_per_eval=steps_per_eval
    )
    assert result.iterations_run == 12
    assert rel_l2(result.x0[None], x0_ref.numpy()) <= 1e-3
    assert rel_l2(np.array(result.history["loss"]), np.array(losses_ref)) <= 1e-3
    assert rel_l2(result.x0, single.x0) > 1e-2  # the extra steps did move z


def test_reused_eps_at_the_same_z_is_the_evaluation(tiny_export):
    """The chain run on the eps an evaluation kept, at that evaluation's z, gives its x0,
    loss and gradient back: the reused steps are the surrogate's chain, not another one."""
    from diip_deploy.runtime.optimise.chain import loss_and_grad_with_eps

    z, y = _inputs(16)
    c = open_chain(load_manifest(tiny_export), "ort-cpu", "surrogate", prefer_fused=False)
    x0, loss, grad, eps = c.loss_grad_and_eps(z, y)
    assert len(eps) == len(c.spec.timesteps)
    again = loss_and_grad_with_eps(c.spec, eps, z, y)
    for a, b in zip(again, (x0, loss, grad)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="surrogate"):
        RestoreSettings(gradient="exact", steps_per_eval=2)


def _saturated_inputs(size=16, seed=4):
    """A start that drives the chain's x0 onto the clamp on part of the image, and a target
    away from it there: where the mask gives no gradient."""
    z, y = _inputs(size, seed)
    return (4.0 * z).astype(np.float32), (0.5 * y).astype(np.float32)


@pytest.mark.parametrize("gradient", ["exact", "surrogate"])
def test_straight_through_clamp_gradient_matches_autograd_and_survives_the_clamp(tiny_export, tiny_torch, gradient):
    """--clamp-gradient straight against torch autograd through a straight-through clamp;
    where the last step's x0 sits on the clamp the mask's surrogate gradient is zero (its
    Jacobian there is sqrt((1 - 1) / (1 - a_t)) = 0) and the straight-through one is not; the
    forward is the same."""
    from diip_deploy.runtime.optimise.chain import chain_forward

    eps_model, spec = tiny_torch
    z, y = _saturated_inputs()
    m = load_manifest(tiny_export)
    masked = open_chain(m, "ort-cpu", gradient, prefer_fused=False)
    straight = open_chain(m, "ort-cpu", gradient, clamp_gradient="straight")
    assert not straight.uses_fused and straight.straight
    x0_m, loss_m, grad_m = masked.loss_and_grad(z, y)
    x0_s, loss_s, grad_s = straight.loss_and_grad(z, y)
    np.testing.assert_array_equal(x0_s, x0_m)
    np.testing.assert_array_equal(loss_s, loss_m)
    _, states = chain_forward(masked.eps, z, m.chain_spec)
    on_clamp = ~states[-1][1]  # the last step's x0 outside [-1, 1] before the clamp
    assert 0.05 < on_clamp.mean() < 0.95, on_clamp.mean()
    assert np.mean(grad_s[on_clamp] != 0) > 0.99
    if gradient == "surrogate":  # elementwise: nothing reaches a clamped pixel through the mask
        assert np.all(grad_m[on_clamp] == 0)
    else:  # the exact gradient still reaches it through the UNet's VJP from its unclamped neighbours
        assert np.abs(grad_s[on_clamp]).mean() > 2 * np.abs(grad_m[on_clamp]).mean()
    x0_t, loss_t, grad_t = loss_and_grad(
        eps_model, torch.from_numpy(z), torch.from_numpy(y), spec, gradient, straight=True
    )
    assert rel_l2(x0_s, x0_t.numpy()) <= TOL and rel_l2(grad_s, grad_t.numpy()) <= TOL
    assert rel_l2(grad_s, grad_m) > 1e-2


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.9, 0.95)])  # torch's, and the shipped export's
def test_straight_through_restore_matches_torch(tiny_export, tiny_torch, betas):
    """The whole loop with --clamp-gradient straight (two Adam steps per evaluation, the
    second on reused eps) against torch's Adam on the straight-through chain, at torch's
    betas and at the shipped export's beta2 of 0.95."""
    eps_model, spec = tiny_torch
    _, y = _saturated_inputs(seed=6)
    b1, b2 = betas
    cfg = RestoreSettings(
        lr=0.05,
        max_iters=10,
        stop="none",
        seed=2,
        steps_per_eval=2,
        clamp_gradient="straight",
        adam_beta1=b1,
        adam_beta2=b2,
    )
    c = open_chain(load_manifest(tiny_export), "ort-cpu", "surrogate", clamp_gradient="straight")
    (result,) = restore(c, y, cfg)
    z0 = torch.from_numpy(initial_latent(y.shape, cfg.seed))
    x0_ref, losses_ref = reference_restore(
        eps_model, torch.from_numpy(y), z0, spec, 10, cfg.lr, "surrogate", betas=betas, steps_per_eval=2, straight=True
    )
    assert rel_l2(result.x0[None], x0_ref.numpy()) <= 1e-3
    assert rel_l2(np.array(result.history["loss"]), np.array(losses_ref)) <= 1e-3


def test_graphs_that_hold_the_mask_are_not_opened_for_straight_through(tiny_export):
    """The fused and iteration graphs trace the mask: a straight-through run uses the
    per-step graph, --loop device says why it cannot, and a chain given them refuses."""
    from diip_deploy.runtime.backends.select import make_runner
    from diip_deploy.runtime.optimise.chain import GraphChain
    from diip_deploy.runtime.restorer import Restorer

    m = load_manifest(tiny_export)
    with Restorer(tiny_export, "ort-cpu", 1, clamp_gradient="straight", loop="auto") as r:
        assert r.loop == "host" and set(r.chain.runners) == {"unet"}
    with pytest.raises(ValueError, match="--clamp-gradient mask"):
        Restorer(tiny_export, "ort-cpu", 1, clamp_gradient="straight", loop="device")
    with pytest.raises(ValueError, match="was traced with mask"):
        GraphChain(
            m.chain_spec, {"chain_surrogate": make_runner(m, "ort-cpu", "chain_surrogate")}, "surrogate", "straight"
        )


def test_falling_rate_matches_torch_cosine_annealing(tiny_export, tiny_torch):
    """--lr-final: the host loop's rate per evaluation is torch's CosineAnnealingLR (T_max
    the cap, eta_min lr * lr_final, stepped once per evaluation), over a whole run with two
    Adam steps per evaluation; and it changes the run (a constant rate is another run)."""
    eps_model, spec = tiny_torch
    _, y = _saturated_inputs(seed=7)
    cap = 10
    cfg = RestoreSettings(
        lr=0.08, lr_final=0.1, max_iters=cap, stop="none", seed=3, steps_per_eval=2, clamp_gradient="straight"
    )
    c = open_chain(load_manifest(tiny_export), "ort-cpu", "surrogate", clamp_gradient="straight")
    (result,) = restore(c, y, cfg)
    z0 = torch.from_numpy(initial_latent(y.shape, cfg.seed))
    x0_ref, losses_ref = reference_restore(
        eps_model,
        torch.from_numpy(y),
        z0,
        spec,
        cap,
        cfg.lr,
        "surrogate",
        steps_per_eval=2,
        straight=True,
        lr_final=0.1,
        max_iters=cap,
    )
    assert rel_l2(result.x0[None], x0_ref.numpy()) <= 1e-3
    assert rel_l2(np.array(result.history["loss"]), np.array(losses_ref)) <= 1e-3
    (constant,) = restore(c, y, dataclasses.replace(cfg, lr_final=1.0))
    assert rel_l2(constant.x0[None], result.x0[None]) > 1e-3


def test_noised_start_runs_as_the_reference_from_that_start(tiny_export, tiny_torch):
    """--init noised: z starts at the forward process of y at the chain's first timestep
    (the seed's own noise), on the sphere, and the run from there is the torch reference's
    from that z; the start holds the input (it correlates with y where the noise start
    does not), so the run differs from the paper's."""
    from diip_deploy.runtime.optimise.optim import project_to_sphere
    from diip_deploy.schedule import forward_noised

    eps_model, spec = tiny_torch
    _, y = _inputs(16, seed=5)
    cfg = RestoreSettings(lr=0.05, max_iters=6, stop="none", seed=2, init="noised", init_strength=8.0)
    a_t = load_manifest(tiny_export).chain_spec.alphas[0]
    noise = initial_latent(y.shape, cfg.seed, project=False)
    z0 = project_to_sphere(forward_noised(y, noise, a_t, 8.0).astype(np.float32))
    np.testing.assert_allclose(initial_latent(y.shape, cfg.seed, noised=(y, a_t, 8.0)), z0, rtol=1e-6)
    corr = lambda a: float(np.corrcoef(a.ravel(), y.ravel())[0, 1])  # noqa: E731
    assert corr(z0) > 0.3 and abs(corr(initial_latent(y.shape, cfg.seed))) < 0.1
    c = open_chain(load_manifest(tiny_export), "ort-cpu", "surrogate")
    (result,) = restore(c, y, cfg)
    x0_ref, losses_ref = reference_restore(
        eps_model, torch.from_numpy(y), torch.from_numpy(z0), spec, cfg.max_iters, cfg.lr, "surrogate"
    )
    assert rel_l2(result.x0[None], x0_ref.numpy()) <= 1e-3
    assert rel_l2(np.array(result.history["loss"]), np.array(losses_ref)) <= 1e-3
    (paper,) = restore(c, y, dataclasses.replace(cfg, init="noise"))
    assert rel_l2(paper.x0[None], result.x0[None]) > 1e-3
