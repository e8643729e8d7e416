"""The runner interface every backend implements.

A runner wraps one graph.  ``activate()`` does the expensive set-up (session, engine,
buffers); ``infer(feed)`` maps input names to numpy arrays and returns output names to
numpy arrays; ``deactivate()`` frees what activate made.  Runners are context managers.
State that should stay on the device between calls (the device loop's z and moments)
lives in the runner's own buffers: ``device_array`` / ``device_empty`` make them and
``run_on_device`` runs on them, as Polygraphy's runners take device views; a backend
without device buffers gets host stand-ins, so callers need no second code path.
"""

from __future__ import annotations

import abc
from typing import Any, Dict, List, Optional, Sequence

import numpy as np


class BackendUnavailable(Exception):
    """The backend cannot run here (library or device missing); the message says which."""


class RunnerError(Exception):
    """A backend could not load or run a graph; the message says which and why."""


class HostBuffer:
    """A host array in a device buffer's place, with the calls of ONNX Runtime's OrtValue."""

    def __init__(self, array: np.ndarray):
        self.array = np.array(array, copy=True)

    def numpy(self) -> np.ndarray:
        return self.array.copy()

    def update_inplace(self, array: np.ndarray) -> None:
        self.array[...] = array


class Runner(abc.ABC):
    name: str = "runner"

    def __init__(self) -> None:
        self.is_active = False

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]: ...

    def deactivate_impl(self) -> None:  # noqa: B027 - a runner with nothing to free need not override it
        pass

    @property
    @abc.abstractmethod
    def input_names(self) -> List[str]: ...

    cuda_graph = False  # whether run_on_device may replay a captured CUDA graph per graph id

    def device_memory_bytes(self) -> Optional[int]:
        """Device memory this runner itself holds now (engine activations and its buffers);
        None where the backend cannot say (host memory is the process's peak RSS)."""
        return None

    def device_array(self, array: np.ndarray) -> Any:
        """A buffer on this runner's device holding a copy of ``array`` (``numpy()`` reads it
        back, ``update_inplace`` overwrites it)."""
        return HostBuffer(array)

    def device_empty(self, shape: Sequence[int], dtype: Any = np.float32) -> Any:
        return HostBuffer(np.empty(tuple(shape), dtype=dtype))

    def run_on_device(self, inputs: Dict[str, Any], outputs: Dict[str, Any], graph_id: Optional[int] = None) -> None:
        """One call whose inputs and outputs are this runner's buffers, the outputs written
        in place; ``graph_id`` names a CUDA graph where the backend captures them."""
        produced = self.infer({k: v.numpy() for k, v in inputs.items()})
        for name, buffer in outputs.items():
            buffer.update_inplace(produced[name])

    def activate(self) -> Runner:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def infer(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if not self.is_active:
            self.activate()
        missing = set(self.input_names) - set(feed)
        if missing:
            raise ValueError(f"{self.name}: missing inputs {sorted(missing)}")
        return self.infer_impl(feed)

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()
