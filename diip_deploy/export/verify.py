"""Check every exported graph against torch autograd, in float32, on fresh random inputs.

The graphs are run through the runtime's own ONNX Runtime runner, at a size and batch
other than the ones traced, so dynamic shapes are checked too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from ..manifest import FP16_SUFFIX
from ..runtime.backends.onnxruntime import OrtRunner
from ..schedule import ChainSpec
from . import reference
from .onnx_export import random_inputs

TOLERANCE = 1e-4
# an fp16 graph against fp32 autograd: fp16's own x0 / gradient tolerances (export/fp16.py),
# doubled where a quantity is a square of the gradient
FP16_TOLERANCE = {
    "x0": 2e-2,
    "loss": 2e-2,
    "laplacian_var": 5e-2,
    "grad_sq": 1e-1,
    "z_next": 2e-2,
    "m_next": 5e-2,
    "v_next": 1e-1,
}


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(
        np.linalg.norm((np.asarray(a, np.float64) - b).ravel())
        / max(float(np.linalg.norm(np.asarray(b, np.float64).ravel())), 1e-30)
    )


def torch_outputs(
    name: str, eps_model: torch.nn.Module, spec: ChainSpec, x: Dict[str, torch.Tensor], straight: bool = False
) -> Dict[str, np.ndarray]:
    """What graph ``name`` must compute on ``x``, by torch autograd (``straight``: a baked
    graph's straight-through clamp)."""
    if name == "unet":
        with torch.no_grad():
            return {"eps": eps_model(x["sample"], x["timestep"]).numpy()}
    if name == "unet_vjp":
        eps, vjp = reference.eps_and_vjp(eps_model, x["sample"], x["timestep"], x["cotangent"])
        return {"eps": eps.numpy(), "vjp": vjp.numpy()}
    kind, gradient = name.removesuffix(FP16_SUFFIX).split("_", 1)
    if kind == "iterate":
        z, y, m, v, step, lr = (x[n] for n in reference.ITERATE_INPUTS)
        outs = reference.iterate(eps_model, z, y, m, v, step, lr, spec=spec, gradient=gradient, straight=straight)
        return {n: o.detach().numpy() for n, o in zip(reference.ITERATE_OUTPUTS, outs)}
    x0, loss, grad = reference.loss_and_grad(eps_model, x["z"], x["y"], spec, gradient, straight)
    return {"x0": x0.numpy(), "loss": loss.numpy(), "grad": grad.numpy()}


def verify_graph(
    name: str,
    path: Path,
    inputs: List[str],
    eps_model: torch.nn.Module,
    spec: ChainSpec,
    channels: int,
    size: int,
    batch: int = 3,
    seed: int = 7,
    straight: bool = False,
) -> Dict:
    """Relative L2 error of each output against torch autograd."""
    x = random_inputs(inputs, channels, size, batch, seed)
    want = torch_outputs(name, eps_model, spec, x, straight)
    error = None
    try:
        with OrtRunner(path, "ort-cpu") as runner:
            got = runner.infer({k: v.numpy() for k, v in x.items()})
        errors = {k: rel_l2(got[k], want[k]) for k in want}
    except Exception as e:  # a graph that does not run at another shape fails verification
        errors, error = {}, f"{type(e).__name__}: {str(e).splitlines()[0]}"
    worst = max(errors.values()) if errors else None
    tolerance = FP16_TOLERANCE if name.endswith(FP16_SUFFIX) else {k: TOLERANCE for k in want}
    passed = bool(errors) and all(errors[k] <= tolerance[k] for k in errors)
    return {
        "rel_l2": errors,
        "max_rel_l2": worst,
        "error": error,
        "tolerance": tolerance,
        "passed": passed,
        "size": [batch, channels, size, size],
        "backend": "ort-cpu",
        "reference": "torch autograd float32",
    }
