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
    """Intra-op spinning off: it steals CPU from whatever runs next (EXPORT_NOTES)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return so


class OrtRunner(Runner):
    """One onnxruntime.InferenceSession over one graph file."""

    def __init__(self, path: Path | str, backend: str = "ort-cpu", threads: Optional[int] = None,
                 provider_options: Optional[Dict[str, Dict[str, Any]]] = None) -> None:
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

    def activate_impl(self) -> None:
        import onnxruntime as ort

        wanted = ORT_PROVIDERS[self.backend]
        have = set(available_providers())
        if wanted[0] not in have:
            raise BackendUnavailable(f"{self.backend}: onnxruntime here has no {wanted[0]} (has {', '.join(sorted(have))})")
        providers: Sequence[Any] = [(p, self.provider_options[p]) if p in self.provider_options else p
                                    for p in wanted if p in have]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=session_options(self.threads),
                                                providers=list(providers))
        except Exception as e:  # ORT's own exception types derive from Exception only
            raise RunnerError(f"{self.path}: ONNX Runtime cannot load it ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]

    @property
    def input_names(self) -> List[str]:
        return self._inputs

    def infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            outs = self.session.run(self._outputs, {k: feed[k] for k in self._inputs})
        except Exception as e:
            raise RunnerError(f"{self.name}: inference failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        return dict(zip(self._outputs, outs))

    def deactivate_impl(self) -> None:
        self.session = None
