"""OpenVINO runner: the export's ONNX graphs on Intel/AMD CPUs, in fp32 or bf16.

bf16 is OpenVINO's inference-precision hint: weights and activations of the heavy ops
(convolutions, matrix products) in bfloat16 where the CPU has native bf16 (AVX-512 BF16,
AMX), accumulation in fp32.  The runtime runs it only where the manifest records that
restorations with it stay within tolerance of fp32 (``diip-variants``), so no run is
silently less accurate than the export says.  Optional: ``pip install '.[openvino]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np

from .base import BackendUnavailable, Runner, RunnerError

HINTS = {"fp32": "f32", "bf16": "bf16"}  # our precision names -> OpenVINO's inference precision


def unavailable_reason() -> Optional[str]:
    """Why OpenVINO cannot run here, or None."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "openvino is not installed (pip install 'diip-deploy[openvino]')"
    return None


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (else OpenVINO's bf16 hint falls back to fp32)."""
    if unavailable_reason():
        return False
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoRunner(Runner):
    """One compiled OpenVINO model over one ONNX graph, on the CPU.

    The graph is compiled for its dynamic shapes, and once a call's input shapes have
    recurred ``static_after`` times, also for those shapes alone: OpenVINO's CPU kernels
    for a fixed shape ran the shipped UNet 8-10% faster per tile than the dynamic ones
    (bench/openvino_static.py).  A restoration calls a graph with one or two batch shapes
    thousands of times, so each is compiled once (about 0.4 s); shapes seen only a few
    times (a batch shrinking as its samples stop) stay on the dynamic model, and at most
    ``max_static`` shapes are kept.  ``static_after = None`` keeps every call dynamic."""

    static_after: Optional[int] = 3
    max_static = 4

    def __init__(self, path: Path | str, precision: str = "fp32", threads: Optional[int] = None) -> None:
        super().__init__()
        if precision not in HINTS:
            raise ValueError(f"the openvino backend runs {' or '.join(HINTS)}, not {precision}")
        self.path = Path(path)
        self.precision = precision
        self.threads = threads
        self.name = f"openvino-{precision}:{self.path.name}"
        self.request: Any = None
        self._inputs: List[str] = []
        self._output_names: List[str] = []
        self._ports: List[Any] = []
        self._outputs: List[Any] = []
        self._core: Any = None
        self._config: Dict[str, Any] = {}
        self._shape_calls: Dict[Tuple, int] = {}
        self._static: Dict[Tuple, Tuple[Any, List[Any], List[Any]]] = {}  # shapes -> request, inputs, outputs
        self._unfixable: Set[Tuple] = set()  # shapes OpenVINO could not compile static

    def activate_impl(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise BackendUnavailable(f"openvino: {reason}")
        import openvino as ov

        config: Dict[str, Any] = {"INFERENCE_PRECISION_HINT": HINTS[self.precision], "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        try:
            core = ov.Core()
            model = core.read_model(str(self.path))
            # the ONNX names, read before compiling: a compiled port may answer to an alias first
            self._inputs = [p.get_any_name() for p in model.inputs]
            self._output_names = [p.get_any_name() for p in model.outputs]
            compiled = core.compile_model(model, "CPU", config)
        except Exception as e:
            raise RunnerError(
                f"{self.path}: OpenVINO cannot load it ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            ) from None
        self._core, self._config = core, config
        self.request = compiled.create_infer_request()
        self._ports = list(compiled.inputs)
        self._outputs = list(compiled.outputs)
        self._shape_calls, self._static, self._unfixable = {}, {}, set()

    @property
    def input_names(self) -> List[str]:
        return self._inputs

    @property
    def static_shapes(self) -> List[Tuple]:
        """The input shapes that have their own static compile, in the order they got it."""
        return list(self._static)

    def _compile_static(self, shapes: Tuple) -> Optional[Tuple[Any, List[Any], List[Any]]]:
        """The graph compiled for these input shapes alone, or None where OpenVINO cannot
        fix them (the call then stays on the dynamic model)."""
        try:
            model = self._core.read_model(str(self.path))
            model.reshape({port: list(shape) for port, shape in zip(model.inputs, shapes)})
            compiled = self._core.compile_model(model, "CPU", self._config)
        except Exception:
            return None
        return compiled.create_infer_request(), list(compiled.inputs), list(compiled.outputs)

    def _request_for(self, shapes: Tuple) -> Tuple[Any, List[Any], List[Any]]:
        static = self._static.get(shapes)
        if static is not None:
            return static
        calls = self._shape_calls[shapes] = self._shape_calls.get(shapes, 0) + 1
        wanted = self.static_after is not None and calls >= self.static_after and shapes not in self._unfixable
        if wanted and len(self._static) < self.max_static:
            static = self._compile_static(shapes)
            if static is not None:
                self._static[shapes] = static
                return static
            self._unfixable.add(shapes)
        return self.request, self._ports, self._outputs

    def infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        arrays = [np.ascontiguousarray(feed[k]) for k in self._inputs]
        request, ports, outputs = self._request_for(tuple(a.shape for a in arrays))
        try:
            result = request.infer(dict(zip(ports, arrays)))
        except Exception as e:
            raise RunnerError(
                f"{self.name}: inference failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            ) from None
        # the request reuses its output memory on the next call: copy out
        return {n: np.array(result[o], copy=True) for n, o in zip(self._output_names, outputs)}

    def deactivate_impl(self) -> None:
        self.request = None
        self._static, self._shape_calls, self._unfixable, self._core = {}, {}, set(), None
