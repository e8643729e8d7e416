"""ONNX Runtime runners: CPU, CUDA, and the TensorRT execution provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .base import BackendUnavailable, Runner, RunnerError

# The runtime's ORT backends, best first, as --backend names them.
ORT_PROVIDERS = {
    "ort-tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-cpu": ["CPUExecutionProvider"],
}


def available_providers() -> List[str]:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a base dependency
        return []
    return list(ort.get_available_providers())


def session_options(threads: Optional[int] = None):
    """Intra-op spinning off: it steals CPU from whatever runs next (docs/export.md)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return so


DEVICE = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-tensorrt": "cuda"}


class OrtRunner(Runner):
    """One onnxruntime.InferenceSession over one graph file.

    With ``io_binding`` the inputs and outputs live in OrtValues on the provider's device,
    allocated once per shape and updated in place, and outputs are copied to the host once
    per call: fixed addresses, which ``cuda_graph`` (ORT's CUDA-graph capture, CUDA
    provider only) needs, and no per-call device allocation."""

    def __init__(
        self,
        path: Path | str,
        backend: str = "ort-cpu",
        threads: Optional[int] = None,
        provider_options: Optional[Dict[str, Dict[str, Any]]] = None,
        io_binding: bool = False,
        cuda_graph: bool = False,
    ) -> None:
        super().__init__()
        if backend not in ORT_PROVIDERS:
            raise ValueError(f"unknown ONNX Runtime backend {backend!r}")
        self.path = Path(path)
        self.backend = backend
        self.threads = threads
        self.provider_options = provider_options or {}
        self.name = f"{backend}:{self.path.name}"
        self.session: Any = None
        self._inputs: List[str] = []
        if cuda_graph and backend != "ort-cuda":
            raise ValueError("CUDA graphs need the ort-cuda backend")
        self.io_binding = io_binding or cuda_graph
        self.cuda_graph = cuda_graph
        if cuda_graph:
            cuda = dict(self.provider_options.get("CUDAExecutionProvider", {}))
            self.provider_options = {
                **self.provider_options,
                "CUDAExecutionProvider": {**cuda, "enable_cuda_graph": "1"},
            }
        self._bound: Dict[str, Any] = {}  # name -> OrtValue on the device, reused while its shape holds

    def activate_impl(self) -> None:
        import onnxruntime as ort

        wanted = ORT_PROVIDERS[self.backend]
        have = set(available_providers())
        if wanted[0] not in have:
            raise BackendUnavailable(
                f"{self.backend}: onnxruntime here has no {wanted[0]} (has {', '.join(sorted(have))})"
            )
        providers: Sequence[Any] = [
            (p, self.provider_options[p]) if p in self.provider_options else p for p in wanted if p in have
        ]
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=session_options(self.threads), providers=list(providers)
            )
        except Exception as e:  # ORT's own exception types derive from Exception only
            raise RunnerError(
                f"{self.path}: ONNX Runtime cannot load it ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            ) from None
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]

    @property
    def input_names(self) -> List[str]:
        return self._inputs

    def infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            if self.io_binding:
                return self._infer_bound(feed)
            outs = self.session.run(self._outputs, {k: feed[k] for k in self._inputs})
        except RunnerError:
            raise
        except Exception as e:
            raise self._failed(e) from None
        return dict(zip(self._outputs, outs))

    def _failed(self, e: Exception) -> RunnerError:
        return RunnerError(f"{self.name}: inference failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})")

    def _value(self, name: str, array: np.ndarray) -> Any:
        """The device OrtValue for ``name``, updated in place from ``array`` when its shape
        and dtype are last call's, else made anew (under CUDA graphs: an error)."""
        array = np.ascontiguousarray(array)
        held = self._bound.get(name)
        if held is not None and held[1] == (array.shape, array.dtype):
            held[0].update_inplace(array)
            return held[0]
        if held is not None and self.cuda_graph:
            raise RunnerError(
                f"{self.name}: CUDA graphs need fixed shapes; {name} went from {held[1][0]} to "
                f"{array.shape} (use a --batch that divides the tiles, or no CUDA graphs)"
            )
        v = self.device_array(array)
        self._bound[name] = (v, (array.shape, array.dtype))
        return v

    def _infer_bound(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        binding = self.session.io_binding()
        for k in self._inputs:
            binding.bind_ortvalue_input(k, self._value(k, feed[k]))
        for o in self._outputs:
            binding.bind_output(o, DEVICE[self.backend])
        self.session.run_with_iobinding(binding)
        return dict(zip(self._outputs, binding.copy_outputs_to_cpu()))

    def device_array(self, array: np.ndarray) -> Any:
        """An OrtValue on this runner's device holding a copy of ``array``."""
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), DEVICE[self.backend], 0)

    def device_empty(self, shape: Sequence[int], dtype: Any = np.float32) -> Any:
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, DEVICE[self.backend], 0)

    def run_on_device(self, inputs: Dict[str, Any], outputs: Dict[str, Any], graph_id: Optional[int] = None) -> None:
        """One call with every input and output an OrtValue already on the device (written
        in place); ``graph_id`` names the CUDA graph to capture or replay for this exact
        set of buffers (ids start at 1; ORT reserves 0)."""
        import onnxruntime as ort

        self.activate()
        binding = self.session.io_binding()
        for k in self._inputs:
            binding.bind_ortvalue_input(k, inputs[k])
        for o in self._outputs:
            binding.bind_ortvalue_output(o, outputs[o])
        options = None
        if self.cuda_graph and graph_id is not None:
            options = ort.RunOptions()
            options.add_run_config_entry("gpu_graph_id", str(graph_id))
        try:
            self.session.run_with_iobinding(binding, options)
        except Exception as e:
            raise self._failed(e) from None

    def deactivate_impl(self) -> None:
        self.session = None
        self._bound = {}
