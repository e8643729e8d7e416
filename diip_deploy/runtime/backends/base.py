"""The runner interface every backend implements.

A runner wraps one graph.  ``activate()`` does the expensive set-up (session, engine,
buffers); ``infer(feed)`` maps input names to numpy arrays and returns output names to
numpy arrays; ``deactivate()`` frees what activate made.  Runners are context managers.
"""

from __future__ import annotations

import abc
from typing import Dict, List, Optional

import numpy as np


class BackendUnavailable(Exception):
    """The backend cannot run here (library or device missing); the message says which."""


class RunnerError(Exception):
    """A backend could not load or run a graph; the message says which and why."""


class Runner(abc.ABC):
    name: str = "runner"

    def __init__(self) -> None:
        self.is_active = False

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]: ...

    def deactivate_impl(self) -> None:
        pass

    @property
    @abc.abstractmethod
    def input_names(self) -> List[str]: ...

    # Whether the runner also offers device_array / device_empty / run_on_device, so a
    # caller can keep state in the backend's own device buffers between calls.
    supports_device_buffers = False

    def device_memory_bytes(self) -> Optional[int]:
        """Device memory this runner itself holds now (engine activations and its buffers);
        None where the backend cannot say (host memory is the process's peak RSS)."""
        return None

    def activate(self) -> "Runner":
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

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()
