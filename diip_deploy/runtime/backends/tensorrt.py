"""TensorRT runner: deserialised engines run on one CUDA stream, torch-free.

Uses the ``tensorrt`` Python API (10.x) and ``cuda-python`` for memory and streams
(no pycuda, no torch).  Device buffers are allocated once per input shape and reused;
only the runner's inputs and outputs cross to and from the host.

Before any TensorRT call, an engine is checked against its manifest entry: its own
sha256, the sha256 of the ONNX graph it was built from (which must still be the graph the
manifest lists), then the TensorRT version and the GPU it was built for.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ...manifest import Manifest, ManifestError
from .base import BackendUnavailable, Runner


class EngineMismatch(ManifestError):
    """An engine does not belong to this manifest, TensorRT version or GPU."""


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
    return cudart


def import_tensorrt() -> Any:
    """The real tensorrt module; the type stubs alone import as an empty namespace."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable("the tensorrt Python package is not installed") from None
    if not hasattr(trt, "Runtime"):
        raise BackendUnavailable("only TensorRT's type stubs are installed, not its libraries")
    return trt


def _check(call_result: Any) -> Any:
    """cuda-python returns (err, *values); raise on error, return the values."""
    err, *values = call_result if isinstance(call_result, tuple) else (call_result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else tuple(values)


def current_gpu() -> Dict[str, Any]:
    """Name and compute capability of CUDA device 0."""
    cudart = _import_cudart()
    props = _check(cudart.cudaGetDeviceProperties(0))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"name": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}"}


def check_engine_entry(
    manifest: Manifest, graph: str, trt_version: Optional[str] = None, gpu: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """Refuse an engine that does not match; cheap checks first, no TensorRT call.

    ``trt_version``/``gpu`` describe this machine; left None, those checks are skipped
    (the runner fills them in only after the hash checks passed).
    """
    entry = manifest.engines.get(graph)
    if entry is None:
        raise EngineMismatch(f"{manifest.root}: no TensorRT engine for graph {graph!r} in the manifest")
    manifest.engine_path(graph)  # engine file hash
    graph_entry = manifest.graphs.get(graph)
    if graph_entry is None or entry.get("onnx_sha256") != graph_entry.get("sha256"):
        raise EngineMismatch(
            f"{entry['file']}: built from an ONNX graph that is no longer {graph}.onnx; rebuild the engine"
        )
    manifest.graph_path(graph)  # the ONNX on disk is still the one the manifest lists
    if trt_version is not None and entry.get("tensorrt_version") != trt_version:
        raise EngineMismatch(
            f"{entry['file']}: built by TensorRT {entry.get('tensorrt_version')}, this is {trt_version}; "
            "rebuild on this machine"
        )
    if gpu is not None:
        want = (entry.get("gpu", {}).get("name"), entry.get("gpu", {}).get("compute_capability"))
        have = (gpu.get("name"), gpu.get("compute_capability"))
        if want[1] != have[1] or want[0] != have[0]:
            raise EngineMismatch(
                f"{entry['file']}: built for {want[0]} (sm {want[1]}), this GPU is {have[0]} (sm {have[1]}); "
                "rebuild on this machine"
            )
    return entry


def unavailable_reason(manifest: Manifest) -> Optional[str]:
    """Why the TensorRT backend cannot run this manifest here, or None."""
    if not manifest.engines:
        return "the manifest lists no TensorRT engines (diip-export --engine tensorrt)"
    try:
        trt = import_tensorrt()
    except BackendUnavailable as e:
        return str(e)
    try:
        gpu = current_gpu()
    except Exception as e:  # cuda-python missing, or no device
        return f"no usable CUDA device via cuda-python ({type(e).__name__}: {e})"
    for graph in manifest.engines:
        try:
            check_engine_entry(manifest, graph, trt.__version__, gpu)
        except ManifestError as e:
            return str(e)
    return None


def _dims(d: Any) -> Tuple[int, ...]:
    """A TensorRT Dims as a plain tuple (Dims has len and indexing)."""
    return tuple(int(d[i]) for i in range(len(d)))


_NP_OF_TRT = {"FLOAT": np.float32, "HALF": np.float16, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}


class TensorRTRunner(Runner):
    """One engine, one execution context, one CUDA stream."""

    def __init__(self, manifest: Manifest, graph: str) -> None:
        super().__init__()
        self.manifest = manifest
        self.graph = graph
        self.name = f"tensorrt:{graph}"
        self._inputs: List[str] = []
        self._outputs: List[str] = []
        self._buffers: Dict[str, Tuple[int, int]] = {}  # name -> (device ptr, nbytes)
        self._shape_key: Optional[Tuple] = None

    def activate_impl(self) -> None:
        check_engine_entry(self.manifest, self.graph)  # hashes, before any TensorRT call
        import_tensorrt()  # a clear error if only the stubs are installed
        import tensorrt as trt

        self.cudart = _import_cudart()
        check_engine_entry(self.manifest, self.graph, trt.__version__, current_gpu())
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        blob = self.manifest.engine_path(self.graph).read_bytes()
        engine = self.runtime.deserialize_cuda_engine(blob)
        if engine is None:  # type: ignore[comparison-overlap]
            raise EngineMismatch(f"{self.graph}: TensorRT could not deserialise the engine")
        self.engine = engine
        self.context = engine.create_execution_context()
        self.stream = _check(self.cudart.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: _NP_OF_TRT[self.engine.get_tensor_dtype(n).name] for n in names}

    @property
    def input_names(self) -> List[str]:
        return self._inputs

    def _allocate(self, feed: Dict[str, np.ndarray]) -> None:
        """(Re)allocate device buffers when the input shapes change."""
        key = tuple((n, feed[n].shape) for n in self._inputs)
        if key == self._shape_key:
            return
        self._free()
        for n in self._inputs:
            self.context.set_input_shape(n, tuple(feed[n].shape))
        for n in self._inputs + self._outputs:
            shape = _dims(self.context.get_tensor_shape(n))
            nbytes = int(np.prod(shape)) * np.dtype(self._dtypes[n]).itemsize
            ptr = _check(self.cudart.cudaMalloc(max(nbytes, 1)))
            self._buffers[n] = (int(ptr), nbytes)
            self.context.set_tensor_address(n, int(ptr))
        self._shape_key = key

    def device_memory_bytes(self) -> Optional[int]:
        """This engine's own: the context's activation memory for profile 0 plus its IO buffers."""
        if not self.is_active:
            return None
        return int(self.engine.get_device_memory_size_for_profile_v2(0)) + sum(n for _, n in self._buffers.values())

    def infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        cudart = self.cudart
        arrays: Dict[str, np.ndarray] = {n: np.ascontiguousarray(feed[n], dtype=self._dtypes[n]) for n in self._inputs}
        self._allocate(arrays)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for n, a in arrays.items():
            ptr, nbytes = self._buffers[n]
            _check(cudart.cudaMemcpyAsync(ptr, a.ctypes.data, nbytes, h2d, self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError(f"{self.name}: TensorRT execution failed")
        out: Dict[str, np.ndarray] = {}
        for n in self._outputs:
            ptr, nbytes = self._buffers[n]
            host: np.ndarray = np.empty(_dims(self.context.get_tensor_shape(n)), dtype=self._dtypes[n])
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, ptr, nbytes, d2h, self.stream))
            out[n] = host
        _check(cudart.cudaStreamSynchronize(self.stream))
        return {n: (a.astype(np.float32) if a.dtype == np.float16 else a) for n, a in out.items()}

    def _free(self) -> None:
        for ptr, _ in self._buffers.values():
            self.cudart.cudaFree(ptr)
        self._buffers.clear()
        self._shape_key = None

    def deactivate_impl(self) -> None:
        self._free()
        self.cudart.cudaStreamDestroy(self.stream)
        del self.context, self.engine
