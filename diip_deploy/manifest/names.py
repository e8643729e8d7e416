"""What the contract names: graph names, and the chain's identity (one rule)."""

from __future__ import annotations

from typing import Any, Dict, Mapping

import numpy as np

from ..schedule import ChainSpec

# Graph names: the per-step graphs are "unet" and "unet_vjp"; a graph with the chain baked
# in is chain_<gradient> (one loss-and-gradient call) or iterate_<gradient> (a whole
# iteration with Adam); an fp16 copy of any of them is <name>_fp16.
FP16_SUFFIX = "_fp16"
BAKED_PREFIXES = ("chain_", "iterate_")


def fused_graph_name(gradient: str) -> str:
    return f"chain_{gradient}"


def iterate_graph_name(gradient: str) -> str:
    """The graph of a whole iteration (chain, Adam, projection) for a gradient mode."""
    return f"iterate_{gradient}"


def fp16_name(graph: str) -> str:
    return graph + FP16_SUFFIX


def chain_record(spec: ChainSpec) -> Dict[str, Any]:
    """The chain's identity as a manifest records it (top level, and in each baked graph)."""
    return {"timesteps": list(spec.timesteps), "alphas_cumprod": list(spec.alphas), "clamp": bool(spec.clamp)}


def same_chain(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """The one rule for "the same chain": equal timesteps and clamp, alphas equal to 1e-12."""
    ta, tb = list(a.get("timesteps", [])), list(b.get("timesteps", []))
    aa, ab = list(a.get("alphas_cumprod", [])), list(b.get("alphas_cumprod", []))
    return (
        ta == tb
        and a.get("clamp") == b.get("clamp")
        and len(aa) == len(ab)
        and bool(np.allclose(aa, ab, rtol=0, atol=1e-12))
    )
