"""Pick a backend, decide what runs on it, and open a manifest's graphs there.

``auto`` tries TensorRT engines, then ONNX Runtime with CUDA, then the CPU, and says why
it skipped each one it did not take.  On the CPU it times one UNet call of each variant
the manifest verified (``cpu_variants.py``) and takes the fastest.  What depends on the
backend is decided here and nowhere else: which backends are GPUs, the precision a run
gets, the default batch, and whether the loop keeps its state on the device
(``device_loop_graph``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ...manifest import (
    BAKED_PREFIXES,
    Manifest,
    ManifestError,
    baked_chain_matches,
    fp16_name,
    fused_graph_name,
    iterate_graph_name,
)
from ...settings import Precision, RestoreSettings, choices
from ..optimise.chain import GraphChain
from ..optimise.samples import iteration_graph_fits
from .base import BackendUnavailable
from .cpu_variants import check_precision, fastest_cpu_variant, resolve_precision
from .onnxruntime import ORT_PROVIDERS, available_providers
from .runners import graph_at, make_runner

BACKENDS = ("tensorrt", "ort-tensorrt", "ort-cuda", "openvino", "ort-cpu")
AUTO_ORDER = ("tensorrt", "ort-cuda")  # then the fastest verified CPU variant
GPU_BACKENDS = ("tensorrt", "ort-tensorrt", "ort-cuda")
ORT_GPU_BACKENDS = tuple(b for b in GPU_BACKENDS if b in ORT_PROVIDERS)  # where a device loop pays (docs/method.md)
PRECISIONS = choices("precision")
CPU_BATCH = 8  # tiles per call on the CPU, and on TensorRT engines (their profile's default opt)
GPU_PIXELS_PER_CALL = 512 * 512  # on an H100 one call of 16 tiles of 64x64 took 7.0 ms, of 512x512 20 ms (issue 11)


def default_batch(backend: str, tile: int) -> int:
    """Tiles per graph call where --batch is not given: 8 on the CPU and on TensorRT engines
    (built for up to 16); on ONNX Runtime's GPU providers as many as make 512x512 pixels
    (64 tiles of 64), since a GPU call costs about the same up to there.  The output
    does not depend on it."""
    if backend not in ORT_GPU_BACKENDS or tile <= 0:
        return CPU_BATCH
    return max(1, min(64, GPU_PIXELS_PER_CALL // (tile * tile)))


@dataclass
class Selection:
    backend: str
    precision: Precision = "fp32"
    skipped: Dict[str, str] = field(default_factory=dict)
    timed: Dict[str, float] = field(default_factory=dict)  # CPU variant -> seconds per UNet call, where auto timed

    def describe(self) -> str:
        why = "; ".join(f"{b}: {r}" for b, r in self.skipped.items())
        timed = ", ".join(f"{v} {s * 1000:.0f} ms" for v, s in self.timed.items())
        return (
            f"backend {self.backend}"
            + (f" (skipped {why})" if why else "")
            + f", precision {self.precision}"
            + (f" (one UNet call: {timed})" if timed else "")
        )


def graphs_for(
    manifest: Manifest, gradient: str, prefer_fused: bool = True, clamp_gradient: Optional[str] = None
) -> List[str]:
    """The graphs (roles) one gradient mode needs: the fused chain if shipped (and, given
    ``clamp_gradient``, traced with it), else per-step."""
    fused = fused_graph_name(gradient)
    if prefer_fused and manifest.has_graph(fused) and clamp_gradient in (None, manifest.baked_clamp_gradient(fused)):
        check_baked_chain(manifest, fused)
        return [fused]
    names = ["unet"] + (["unet_vjp"] if gradient == "exact" else [])
    missing = [n for n in names if not manifest.has_graph(n)]
    if missing:
        raise ManifestError(
            f"{manifest.root}: gradient {gradient!r} needs graph(s) {', '.join(missing)}, not in this export"
        )
    return names


def check_baked_chain(manifest: Manifest, name: str) -> None:
    """A graph with the chain inside must have been exported for the manifest's chain."""
    if not baked_chain_matches(manifest, name):
        raise ManifestError(
            f"{manifest.root}: {name}.onnx was exported for another chain than the manifest's; re-export"
        )


def _iteration_graph(manifest: Manifest, backend: str, gradient: str, precision: str) -> Optional[str]:
    """The iteration graph the loop can keep its state on the device with (its file's name
    in the manifest), or None: the export has none for this gradient and precision (fp16:
    its ``_fp16`` twin; TensorRT's EP makes fp16 from the fp32 one), or the backend
    (TensorRT engines) has no use for it."""
    role = iterate_graph_name(gradient)
    name = role if precision == "fp32" or backend == "ort-tensorrt" else fp16_name(role)
    if backend not in ORT_PROVIDERS or not manifest.has_graph(name):
        return None
    check_baked_chain(manifest, name)
    return name


def device_loop_graph(manifest: Manifest, backend: str, settings: RestoreSettings) -> Optional[str]:
    """The one decision of where the loop's state lives: the iteration graph to open, or
    None for the host loop.  ``auto``: on ONNX Runtime's GPU providers where the export
    has the graph (on the CPU a device loop saves nothing); ``device``: wherever it can
    run, and an error where it cannot."""
    if settings.loop == "host" or (settings.loop == "auto" and backend not in ORT_GPU_BACKENDS):
        return None
    if not iteration_graph_fits(settings):
        if settings.loop == "auto":
            return None
        raise ValueError(
            "--loop device runs one step of Adam (betas 0.9, 0.999) at one rate with the projection per evaluation, "
            "as the iteration graph does; use --loop host, or --adam-beta1 0.9 --adam-beta2 0.999 "
            "--steps-per-eval 1 --lr-final 1"
        )
    graph = _iteration_graph(manifest, backend, settings.gradient, settings.precision)
    held = None if graph is None else manifest.baked_clamp_gradient(graph)
    if held is not None and held != settings.clamp_gradient:
        if settings.loop == "auto":
            return None  # the host loop computes this run's gradient; the graph does not
        raise ValueError(
            f"{manifest.root}: {graph}.onnx was traced with --clamp-gradient {held}, this run asks for "
            f"{settings.clamp_gradient}; use --loop host, or re-export the graph under that default"
        )
    if graph is None and settings.loop == "device":
        fp16 = " --precision fp16" if settings.precision == "fp16" else ""
        raise ValueError(
            f"--loop device needs an ONNX Runtime backend and the export's iterate_{settings.gradient}"
            f"{'_fp16' if fp16 else ''} graph (diip-export MODEL --out {manifest.root} --iterate "
            f"{settings.gradient}{fp16} --add)"
        )
    return None if graph is None else iterate_graph_name(settings.gradient)  # the role open_chain opens


def backend_unavailable_reason(manifest: Manifest, backend: str) -> Optional[str]:
    """Why ``backend`` cannot run this manifest here, or None if it can."""
    if backend == "tensorrt":
        from . import tensorrt as trt_backend

        return trt_backend.unavailable_reason(manifest)
    if backend == "openvino":
        from .openvino import unavailable_reason

        return unavailable_reason()
    if backend in ORT_PROVIDERS:
        provider = ORT_PROVIDERS[backend][0]
        if provider not in available_providers():
            return f"onnxruntime has no {provider} (install onnxruntime-gpu on a CUDA machine)"
        return None
    return f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})"


def select_backend(
    manifest: Manifest, requested: str = "auto", precision: Precision = "auto", threads: Optional[int] = None
) -> Selection:
    """The backend and precision a run gets.  ``precision`` auto: fp32, or on OpenVINO
    bf16 where the manifest verified it; on the CPU, ``auto`` takes the fastest verified
    variant here."""
    if requested != "auto":
        reason = backend_unavailable_reason(manifest, requested)
        if reason:
            raise BackendUnavailable(f"{requested}: {reason}")
        return Selection(requested, resolve_precision(manifest, requested, precision))
    skipped: Dict[str, str] = {}
    for b in AUTO_ORDER:
        reason = backend_unavailable_reason(manifest, b)
        if reason is None:
            return Selection(b, resolve_precision(manifest, b, precision), skipped)
        skipped[b] = reason
    backend, chosen, timed = fastest_cpu_variant(manifest, precision, threads, skipped, CPU_BATCH)
    return Selection(backend, chosen, skipped, timed)


def open_chain(
    manifest: Manifest,
    backend: str,
    gradient: str,
    threads: Optional[int] = None,
    prefer_fused: bool = True,
    precision: str = "fp32",
    io_binding: bool = False,
    cuda_graph: bool = False,
    loop_graph: Optional[str] = None,
    clamp_gradient: str = "mask",
) -> GraphChain:
    """The chain on runners of ``backend``; fp16 runs the export's fp16 ONNX copies (ONNX
    Runtime backends; TensorRT engines carry the precision they were built with);
    ``io_binding`` / ``cuda_graph``: see ``OrtRunner`` (unmeasured on a GPU so far, so off
    by default); ``loop_graph``: also open this iteration graph (``device_loop_graph``)."""
    if precision not in PRECISIONS or precision == "auto":
        raise ValueError(f"--precision must be one of {', '.join(p for p in PRECISIONS if p != 'auto')}")
    check_precision(manifest, backend, precision, must_be_verified=False)  # the Selection checked a run's
    if precision != "fp32" and backend == "tensorrt":
        raise ValueError(
            "--precision applies to ONNX Runtime backends; TensorRT engines carry their own "
            "(diip-export --engine tensorrt --precision fp16)"
        )
    names = graphs_for(manifest, gradient, prefer_fused, clamp_gradient)
    names += [loop_graph] if loop_graph else []
    trt_ep = backend == "ort-tensorrt"  # TensorRT's EP builds fp16 engines from the fp32 graphs itself
    runners = {
        n: make_runner(
            manifest,
            backend,
            n if trt_ep else graph_at(manifest, n, precision),
            threads,
            io_binding,
            cuda_graph and not trt_ep,
            trt_fp16=trt_ep and precision == "fp16",
            precision=precision,
        ).activate()
        for n in names
    }
    held = {n: manifest.baked_clamp_gradient(n) for n in names if n.startswith(BAKED_PREFIXES)}
    return GraphChain(manifest.chain_spec, runners, gradient, clamp_gradient, held)
