"""One runner for one of a manifest's graphs, on a backend at a precision.

The loader layer under both backend selection (``select.py``) and the CPU variants'
timing (``cpu_variants.py``), so neither imports the other for it.  Backends whose
packages are optional (TensorRT, OpenVINO) are imported only when asked for.
"""

from __future__ import annotations

from typing import Optional

from ...manifest import Manifest, ManifestError, fp16_name
from .base import Runner
from .onnxruntime import OrtRunner


def graph_at(manifest: Manifest, role: str, precision: str) -> str:
    """The manifest's graph that plays ``role`` (unet, unet_vjp, chain_*) at a precision
    (bf16 is a hint OpenVINO applies to the fp32 graph)."""
    if precision in ("fp32", "bf16"):
        return role
    name = fp16_name(role)
    if not manifest.has_graph(name):
        raise ManifestError(f"{manifest.root}: no {precision} graphs in this export (run diip-fp16 {manifest.root})")
    return name


def make_runner(
    manifest: Manifest,
    backend: str,
    graph: str,
    threads: Optional[int] = None,
    io_binding: bool = False,
    cuda_graph: bool = False,
    trt_fp16: bool = False,
    precision: str = "fp32",
) -> Runner:
    if backend == "tensorrt":
        from .tensorrt import TensorRTRunner

        return TensorRTRunner(manifest, graph)
    if backend == "openvino":
        from .openvino import OpenVinoRunner

        return OpenVinoRunner(manifest.graph_path(graph), precision, threads)
    options = {}
    if backend == "ort-tensorrt":
        cache = manifest.root / "ort_trt_cache"
        options["TensorrtExecutionProvider"] = {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache),
            "trt_fp16_enable": "True" if trt_fp16 else "False",
        }
    return OrtRunner(
        manifest.graph_path(graph),
        backend=backend,
        threads=threads,
        provider_options=options,
        io_binding=io_binding,
        cuda_graph=cuda_graph,
    )
