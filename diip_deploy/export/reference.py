"""The torch reference: the DDIM chain of ``diip_deploy.schedule`` under autograd.

It is the oracle that every exported graph and the numpy runtime are checked against,
and the module the fused-chain graphs are traced from.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..schedule import ChainSpec, ddim_step, model_output_to_eps, mse_loss, sphere_radius, straight_through_clamp
from ..settings import choices

GRADIENT_MODES = choices("gradient")


class EpsModel(torch.nn.Module):
    """UNet followed by the prediction-type conversion, so every graph outputs eps."""

    alphas_cumprod: torch.Tensor  # a buffer: it moves with the module and is traced as a constant

    def __init__(self, unet: torch.nn.Module, alphas_cumprod: ArrayLike, prediction_type: str):
        super().__init__()
        self.unet = unet
        self.prediction_type = prediction_type
        self.register_buffer("alphas_cumprod", torch.tensor(np.asarray(alphas_cumprod), dtype=torch.float32))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        out = self.unet(sample, timestep).sample
        if self.prediction_type == "epsilon":
            return out
        a = torch.index_select(self.alphas_cumprod, 0, timestep).reshape(-1, 1, 1, 1)
        return model_output_to_eps(out, sample, a.sqrt(), (1.0 - a).sqrt(), self.prediction_type)


class Fp16Eps(torch.nn.Module):
    """A copy of an eps model in float16, fed and read in float32: traced inside an
    iteration graph, the UNet calls run in fp16 while the DDIM steps, the loss, Adam and the
    projection around them stay in fp32 (inside, softmax traces in fp32; group norm exports
    as an fp16 InstanceNormalization).  Verified with fp16's tolerances, not assumed."""

    def __init__(self, eps_model: torch.nn.Module):
        super().__init__()
        import copy

        self.inner = copy.deepcopy(eps_model).half()

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.inner(sample.half(), timestep).float()


def chain(
    eps_model: torch.nn.Module, z: torch.Tensor, spec: ChainSpec, detach_eps: bool = False, straight: bool = False
) -> torch.Tensor:
    """g(z): the last step's (clamped) x0_hat.  ``detach_eps`` gives the surrogate graph;
    ``straight``, a straight-through clamp (``--clamp-gradient straight``)."""
    x = z
    x0 = z
    clamp_fn = (lambda v: straight_through_clamp(v, torch.Tensor.detach)) if straight else None
    for c in spec.coefficients():
        t = torch.full((z.shape[0],), c.t, dtype=torch.int64, device=z.device)
        eps = eps_model(x.detach() if detach_eps else x, t)
        if detach_eps:
            eps = eps.detach()
        x, x0, _ = ddim_step(x, eps, c, spec.clamp, clamp_fn)
    return x0


def loss_and_grad(
    eps_model: torch.nn.Module,
    z: torch.Tensor,
    y: torch.Tensor,
    spec: ChainSpec,
    gradient: str = "exact",
    straight: bool = False,
) -> tuple:
    """(x0, per-image MSE loss [B], d(sum loss)/dz) by autograd through the chain."""
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient must be one of {GRADIENT_MODES}, got {gradient!r}")
    zz = z.detach().requires_grad_(True)
    x0 = chain(eps_model, zz, spec, detach_eps=(gradient == "surrogate"), straight=straight)
    loss = mse_loss(x0, y)
    (grad,) = torch.autograd.grad(loss.sum(), zz)
    return x0.detach(), loss.detach(), grad


ITERATE_INPUTS = ["z", "y", "m", "v", "step", "lr"]
ITERATE_OUTPUTS = ["x0", "loss", "laplacian_var", "grad_sq", "z_next", "m_next", "v_next"]


def iterate(
    eps_model: torch.nn.Module,
    z: torch.Tensor,
    y: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: torch.Tensor,
    lr: torch.Tensor,
    spec: ChainSpec,
    gradient: str = "surrogate",
    straight: bool = False,
) -> tuple:
    """One whole DIIP iteration, what ``iterate_<gradient>.onnx`` computes so that z and the
    Adam moments never leave the device: the chain's x0 and loss at z, the Laplacian
    variance of x0 and |grad|^2 (a stopping input and a finiteness check), and z, m, v
    after one Adam step (``step``: each sample's step count after it; ``lr`` per sample)
    and the projection.  ``straight``: through a straight-through clamp."""
    from ..runtime.optimise.optim import adam_update, rms_project
    from ..runtime.optimise.stopping import laplacian_variance_of

    x0, loss, grad = loss_and_grad(eps_model, z, y, spec, gradient, straight)
    per_sample = (-1, 1, 1, 1)
    z_next, m_next, v_next = adam_update(z, m, v, grad, step.reshape(per_sample), lr.reshape(per_sample))
    grad_sq = (grad * grad).reshape(grad.shape[0], -1).sum(1)
    return x0, loss, laplacian_variance_of(x0), grad_sq, rms_project(z_next), m_next, v_next


def eps_and_vjp(
    eps_model: torch.nn.Module, sample: torch.Tensor, timestep: torch.Tensor, cotangent: torch.Tensor
) -> tuple:
    """(eps, cotangent^T d eps / d sample): what unet_vjp.onnx computes."""
    x = sample.detach().requires_grad_(True)
    eps = eps_model(x, timestep)
    (vjp,) = torch.autograd.grad(eps, x, cotangent)
    return eps.detach(), vjp


class _Recorded(torch.nn.Module):
    """An eps model that keeps what it answers (``replay=False``) or answers each chain
    step with what was kept at that step (``replay=True``): steps on reused eps."""

    def __init__(self, eps_model: Optional[torch.nn.Module], kept: List[torch.Tensor]):
        super().__init__()
        self.eps_model, self.kept, self.i = eps_model, kept, 0

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        if self.eps_model is None:
            self.i += 1
            return self.kept[self.i - 1]
        eps = self.eps_model(sample, timestep)
        self.kept.append(eps.detach())
        return eps


def reference_restore(
    eps_model: torch.nn.Module,
    y: torch.Tensor,
    z0: torch.Tensor,
    spec: ChainSpec,
    iterations: int,
    lr: float,
    gradient: str = "surrogate",
    project: bool = True,
    betas: Tuple[float, float] = (0.9, 0.999),
    steps_per_eval: int = 1,
    straight: bool = False,
    lr_final: float = 1.0,
    max_iters: Optional[int] = None,
) -> tuple:
    """The DIIP loop with torch.optim.Adam (at ``betas``), no early stop: the oracle for the
    runtime's loop.  ``steps_per_eval`` > 1 (surrogate only): after each evaluation's step,
    more steps through the chain on that evaluation's eps.  ``lr_final`` < 1: torch's
    CosineAnnealingLR to ``lr * lr_final`` over ``max_iters`` evaluations, stepped once per
    evaluation.

    Returns (x0 of the last iteration, list of losses).
    """
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr, betas=betas)
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_iters or iterations, eta_min=lr * lr_final)
        if lr_final != 1.0
        else None
    )
    radius = sphere_radius(z.shape[1:])
    losses = []
    x0 = None
    for k in range(iterations):
        kept: List[torch.Tensor] = []
        x0, loss, grad = loss_and_grad(_Recorded(eps_model, kept), z.detach(), y, spec, gradient, straight)
        losses.append(float(loss[0]))
        if k + 1 == iterations:
            break
        for extra in range(steps_per_eval):
            if extra:
                grad = loss_and_grad(_Recorded(None, kept), z.detach(), y, spec, "surrogate", straight)[2]
            z.grad = grad
            opt.step()
            if project:
                with torch.no_grad():
                    z.mul_(radius / z.flatten(1).norm(dim=1).view(-1, 1, 1, 1))
        if schedule is not None:
            schedule.step()
    return x0, losses
