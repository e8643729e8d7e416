"""Export the eps model, its per-step VJP and the fused chains to ONNX.

Graphs (dynamic batch, height, width; weights are constants):
- ``unet``: (sample [B,C,H,W] f32, timestep [B] i64) -> eps
- ``unet_vjp``: (sample, timestep, cotangent) -> (eps, vjp = cotangent^T d eps/d sample)
- ``chain_exact`` / ``chain_surrogate``: (z, y) -> (x0, loss [B], grad) for the fixed chain
- ``iterate_exact`` / ``iterate_surrogate``: a whole iteration, (z, y, m, v, step [B], lr [B])
  -> (x0, loss, laplacian_var, grad_sq [B], z_next, m_next, v_next): the chain, Adam and
  the projection in one graph, so that the loop's state stays on the device
The chain_* and iterate_* graphs bake in one gradient through the clamp (mask or
straight-through, ``--clamp-gradient``); the manifest records which.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from ..schedule import ChainSpec
from . import reference
from .trace import trace

OPSET = 20
PER_SAMPLE = ("loss", "step", "lr", "laplacian_var", "grad_sq")  # [batch]-shaped graph inputs and outputs


@dataclass
class GraphDef:
    """One graph to export: the function to trace and its I/O names."""

    name: str
    fn: Callable
    inputs: List[str]
    outputs: List[str]
    input_dtypes: List[str]

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"


def graph_defs(
    eps_model: torch.nn.Module,
    spec: ChainSpec,
    gradients: Sequence[str],
    fused: Sequence[str],
    iterate: Sequence[str] = (),
    iterate_fp16: bool = False,
    straight: bool = False,
) -> List[GraphDef]:
    """The graphs an export writes: per-step always, fused chains and iteration graphs when
    asked, and with ``iterate_fp16`` each iteration graph's fp16 twin (``<name>_fp16``);
    ``straight``: the fused and iteration graphs pass the gradient straight through the clamp."""
    defs = [GraphDef("unet", lambda s, t: eps_model(s, t), ["sample", "timestep"], ["eps"], ["float32", "int64"])]
    if "exact" in gradients:
        defs.append(
            GraphDef(
                "unet_vjp",
                lambda s, t, c: reference.eps_and_vjp(eps_model, s, t, c),
                ["sample", "timestep", "cotangent"],
                ["eps", "vjp"],
                ["float32", "int64", "float32"],
            )
        )
    for g in fused:
        if g in gradients:
            defs.append(
                GraphDef(
                    f"chain_{g}",
                    _fused(eps_model, spec, g, straight),
                    ["z", "y"],
                    ["x0", "loss", "grad"],
                    ["float32", "float32"],
                )
            )
    models = [("", eps_model)] + ([("_fp16", reference.Fp16Eps(eps_model))] if iterate_fp16 else [])
    for g in iterate:
        for suffix, model in models:
            if g in gradients:
                defs.append(
                    GraphDef(
                        f"iterate_{g}{suffix}",
                        _iterate(model, spec, g, straight),
                        reference.ITERATE_INPUTS,
                        reference.ITERATE_OUTPUTS,
                        ["float32"] * len(reference.ITERATE_INPUTS),
                    )
                )
    return defs


def _iterate(eps_model: torch.nn.Module, spec: ChainSpec, gradient: str, straight: bool) -> Callable:
    def fn(z, y, m, v, step, lr) -> Tuple[torch.Tensor, ...]:
        return reference.iterate(eps_model, z, y, m, v, step, lr, spec, gradient, straight)

    return fn


def _fused(eps_model: torch.nn.Module, spec: ChainSpec, gradient: str, straight: bool) -> Callable:
    def fn(z: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return reference.loss_and_grad(eps_model, z, y, spec, gradient, straight)

    return fn


def random_inputs(names: Sequence[str], channels: int, size: int, batch: int, seed: int) -> Dict[str, torch.Tensor]:
    """Random graph inputs by name: timesteps include 999, 0 and 500 (the ends of the
    schedule), ``y`` is uniform in [-1, 1], every other input standard normal."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n in names:
        if n in PER_SAMPLE:  # an Adam step count (1..50) or a learning rate (1e-3..1e-1)
            u = torch.rand(batch, generator=g)
            out[n] = torch.floor(u * 50) + 1 if n == "step" else 10 ** (u * 2 - 3)
        elif n == "v":  # a second moment: non-negative
            out[n] = torch.randn(batch, channels, size, size, generator=g) ** 2
        elif n == "timestep":
            extra = torch.randint(0, 1000, (max(0, batch - 3),), generator=g)
            out[n] = torch.tensor([999, 0, 500][:batch] + [int(t) for t in extra], dtype=torch.int64)
        elif n == "y":
            out[n] = torch.rand(batch, channels, size, size, generator=g) * 2 - 1
        else:
            out[n] = torch.randn(batch, channels, size, size, generator=g)
    return out


def export_graph(gd: GraphDef, out_dir: Path, channels: int, size: int, log=print) -> Dict:
    """Trace and write one graph; returns its manifest entry (without the hash)."""
    from torch.export import Dim

    args = tuple(random_inputs(gd.inputs, channels, size, batch=2, seed=1234).values())
    t0 = time.time()
    gm = trace(gd.fn, *args)
    batch, height, width = Dim("batch"), Dim("height"), Dim("width")
    dyn = tuple({0: batch} if a.dim() == 1 else {0: batch, 2: height, 3: width} for a in args)
    path = out_dir / gd.file
    tmp = path.with_suffix(".onnx.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            gm,
            args,
            str(tmp),
            dynamo=True,
            optimize=False,
            opset_version=OPSET,
            input_names=gd.inputs,
            output_names=gd.outputs,
            dynamic_shapes=dyn,
            external_data=False,
            verbose=False,
        )
    tmp.replace(path)
    log(f"  {gd.file}: exported in {time.time() - t0:.0f} s")
    return {
        "file": gd.file,
        "inputs": _io(gd.inputs, gd.input_dtypes, channels),
        "outputs": _io(gd.outputs, ["float32"] * len(gd.outputs), channels),
        "opset": OPSET,
    }


def _io(names: List[str], dtypes: List[str], channels: int) -> List[Dict]:
    out = []
    for n, d in zip(names, dtypes):
        shape = ["batch"] if n in PER_SAMPLE or n == "timestep" else ["batch", channels, "height", "width"]
        out.append({"name": n, "dtype": d, "shape": shape})
    return out
