"""The DDIM arithmetic alone: timesteps, coefficients, and the step's Jacobian terms."""

import numpy as np
import pytest
import torch

from diip_deploy.schedule import (
    ChainSpec,
    ddim_step,
    ddim_timesteps,
    forward_noised,
    linear_alphas_cumprod,
    model_output_to_eps,
    mse_loss_grad,
    step_jacobian_terms,
)


def test_bird_timesteps():
    assert ddim_timesteps(10) == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert ddim_timesteps(1) == [0]
    with pytest.raises(ValueError):
        ddim_timesteps(0)


def test_chain_spec_matches_diffusers_ddim():
    from diffusers import DDIMScheduler

    s = DDIMScheduler(
        beta_schedule="linear", beta_start=1e-4, beta_end=0.02, set_alpha_to_one=True, timestep_spacing="leading"
    )
    s.set_timesteps(10)
    spec = ChainSpec.from_table(linear_alphas_cumprod(), 10)
    assert list(spec.timesteps) == [int(t) for t in s.timesteps]
    np.testing.assert_allclose(spec.alphas, s.alphas_cumprod[s.timesteps].numpy(), rtol=1e-6)
    assert spec.coefficients()[-1].a_prev == 1.0


def test_a_chain_at_its_own_timesteps():
    """--timesteps: any falling spacing, alphas read off the same table; the leading
    spacing given explicitly is the chain --steps makes."""
    table = linear_alphas_cumprod()
    spec = ChainSpec.from_table(table, 0, True, [700, 400, 200, 80, 20])
    assert list(spec.timesteps) == [700, 400, 200, 80, 20]
    assert list(spec.alphas) == [table[t] for t in (700, 400, 200, 80, 20)]
    assert spec.coefficients()[-1].a_prev == 1.0 and spec.coefficients()[0].a_prev == table[400]
    assert ChainSpec.from_table(table, 0, True, ddim_timesteps(5)) == ChainSpec.from_table(table, 5)
    for bad in ([], [200, 400], [400, 400], [1000, 0], [200, -1]):
        with pytest.raises(ValueError, match="fall strictly"):
            ChainSpec.from_table(table, 5, True, bad)


def test_ddim_step_matches_diffusers_clipped_step():
    from diffusers import DDIMScheduler

    s = DDIMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, clip_sample=True, set_alpha_to_one=True)
    s.set_timesteps(10)
    spec = ChainSpec.from_table(linear_alphas_cumprod(), 10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    for c in spec.coefficients()[:3]:
        eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
        want = s.step(eps, c.t, x, eta=0.0, use_clipped_model_output=True).prev_sample
        got, _, _ = ddim_step(x, eps, c, clamp=True)
        torch.testing.assert_close(got, want.to(torch.float64), rtol=1e-5, atol=1e-5)
        x = got


@pytest.mark.parametrize("clamp", [True, False])
def test_step_jacobian_terms_match_autograd(clamp):
    spec = ChainSpec.from_table(linear_alphas_cumprod(), 5, clamp)
    g = torch.Generator().manual_seed(1)
    for c in spec.coefficients():
        x = (3 * torch.randn(1, 3, 6, 6, generator=g, dtype=torch.float64)).requires_grad_(True)
        eps = torch.randn(1, 3, 6, 6, generator=g, dtype=torch.float64).requires_grad_(True)
        out, _, unclamped = ddim_step(x, eps, c, clamp)
        gbar = torch.randn(out.shape, generator=g, dtype=torch.float64)
        dx, deps = torch.autograd.grad(out, (x, eps), gbar)
        D, E = step_jacobian_terms(c, unclamped.numpy())
        np.testing.assert_allclose(dx.numpy(), D * gbar.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(deps.numpy(), E * gbar.numpy(), rtol=1e-9, atol=1e-12)
        if clamp and c.a_prev < 1.0:
            assert not unclamped.all(), "test should exercise clamped pixels"


def test_v_prediction_recovers_eps():
    a = 0.3
    rng = np.random.default_rng(0)
    x0, eps = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    x_t = np.sqrt(a) * x0 + np.sqrt(1 - a) * eps
    v = np.sqrt(a) * eps - np.sqrt(1 - a) * x0
    np.testing.assert_allclose(model_output_to_eps(v, x_t, np.sqrt(a), np.sqrt(1 - a), "v_prediction"), eps, atol=1e-12)
    with pytest.raises(ValueError):
        model_output_to_eps(v, x_t, 1, 0, "sample")


def test_mse_gradient_is_per_image():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    loss, grad = mse_loss_grad(x, y)
    np.testing.assert_allclose(loss, ((x - y) ** 2).reshape(2, -1).mean(1))
    h = 1e-6
    x2 = x.copy()
    x2[1, 2, 3, 1] += h
    fd = (mse_loss_grad(x2, y)[0].sum() - loss.sum()) / h
    assert abs(fd - grad[1, 2, 3, 1]) < 1e-5


def test_forward_noised_is_diffusers_add_noise():
    """--init noised at strength 1 is DDPM's forward process, as diffusers adds noise to a
    training image at the chain's first timestep; other strengths scale the image only."""
    from diffusers import DDPMScheduler

    rng = np.random.default_rng(0)
    y = rng.uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)
    noise = rng.standard_normal(y.shape).astype(np.float32)
    spec = ChainSpec.from_table(linear_alphas_cumprod(), 5)
    t, a_t = spec.timesteps[0], spec.alphas[0]
    want = DDPMScheduler(beta_schedule="linear").add_noise(
        torch.from_numpy(y), torch.from_numpy(noise), torch.tensor([t, t])
    )
    np.testing.assert_allclose(forward_noised(y, noise, a_t), want.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        forward_noised(y, noise, a_t, 3.0) - forward_noised(y, noise, a_t), 2 * np.sqrt(a_t) * y, atol=1e-6
    )
