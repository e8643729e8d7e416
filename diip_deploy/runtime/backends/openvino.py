"""OpenVINO runner: the export's ONNX graphs on Intel/AMD CPUs, in fp32 or bf16.

bf16 is OpenVINO's inference-precision hint: weights and activations of the heavy ops
(convolutions, matrix products) in bfloat16 where the CPU has native bf16 (AVX-512 BF16,
AMX), accumulation in fp32.  The runtime runs it only where the manifest records that
restorations with it stay within tolerance of fp32 (``diip-variants``), so no run is
silently less accurate than the export says.  Optional: ``pip install '.[openvino]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

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
    """One compiled OpenVINO model over one ONNX graph, on the CPU."""

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
        self.request = compiled.create_infer_request()
        self._ports = list(compiled.inputs)
        self._outputs = list(compiled.outputs)

    @property
    def input_names(self) -> List[str]:
        return self._inputs

    def infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            result = self.request.infer({p: np.ascontiguousarray(feed[k]) for p, k in zip(self._ports, self._inputs)})
        except Exception as e:
            raise RunnerError(
                f"{self.name}: inference failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            ) from None
        # the request reuses its output memory on the next call: copy out
        return {n: np.array(result[o], copy=True) for n, o in zip(self._output_names, self._outputs)}

    def deactivate_impl(self) -> None:
        self.request = None
