"""The loop's state on the device: one iteration-graph call per DIIP iteration.

The host loop sends z, every x_t and every eps across the bus at each UNet call and runs
the DDIM step, Adam and the projection in numpy.  With an export's
``iterate_<gradient>`` graph the whole iteration is one call, and z, the Adam moments
and y stay in the backend's device buffers (ONNX Runtime OrtValues): per iteration the
host gets back what the stopping rule needs, each sample's loss, Laplacian variance and
|grad|^2 (B numbers each), and x0 only when something asks for it.  Buffers come in two
parities, so each call reads one set and writes the other: an iteration's x0 stays
readable until the call after next, and with CUDA graphs each parity replays its own.
"""

from __future__ import annotations

import itertools
from typing import Optional, Tuple

import numpy as np

from ..backends.base import Runner

STATE = ("z", "m", "v")
SCALARS = ("loss", "laplacian_var", "grad_sq")
_graph_ids = itertools.count(1)  # CUDA graph ids, unique in the process (ORT reserves 0)


class HostRows:
    """One iteration's x0 for a batch, already on the host."""

    def __init__(self, x0: np.ndarray):
        self._x0 = x0

    def host(self) -> np.ndarray:
        return self._x0


class DeviceRows:
    """One iteration's x0 for a batch, left on the device until first asked for."""

    def __init__(self, batch: DeviceBatch, parity: int, call: int):
        self._batch, self._parity, self._call = batch, parity, call
        self._x0: Optional[np.ndarray] = None

    def host(self) -> np.ndarray:
        if self._x0 is None:
            if self._batch.calls - self._call > 2:  # its buffer has been written again since
                raise RuntimeError("x0 of an iteration two calls back is no longer on the device")
            self._x0 = self._batch.x0[self._parity].numpy()
        return self._x0


class DeviceBatch:
    """A fixed set of samples whose z, Adam moments (m, v) and y live on one runner's
    device; ``steps`` are the Adam steps each has taken so far."""

    def __init__(
        self, runner: Runner, z: np.ndarray, m: np.ndarray, v: np.ndarray, y: np.ndarray, steps: np.ndarray, lr: float
    ):
        self.runner = r = runner
        b = len(z)
        shape = z.shape
        self.state = [
            {"z": r.device_array(z), "m": r.device_array(m), "v": r.device_array(v)},
            {k: r.device_empty(shape) for k in STATE},
        ]
        self.y = r.device_array(y.astype(np.float32, copy=False))
        self.lr = r.device_array(np.full(b, lr, dtype=np.float32))
        self.steps = np.asarray(steps, dtype=np.float32).copy()
        self.step = r.device_array(self.steps)
        self.x0 = [r.device_empty(shape), r.device_empty(shape)]
        self.scalars = {k: r.device_empty((b,)) for k in SCALARS}
        self.graph_ids = (next(_graph_ids), next(_graph_ids)) if r.cuda_graph else (None, None)
        self.calls = 0

    def run(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray, DeviceRows]:
        """One iteration for every sample: (loss, Laplacian variance of x0, |grad|^2) on the
        host, and x0 on the device; z, m and v advance by one Adam step and the projection."""
        p = self.calls % 2
        self.steps += 1
        self.step.update_inplace(self.steps)
        inputs = {**self.state[p], "y": self.y, "step": self.step, "lr": self.lr}
        outputs = {"x0": self.x0[p], **self.scalars, **{f"{k}_next": self.state[1 - p][k] for k in STATE}}
        self.runner.run_on_device(inputs, outputs, self.graph_ids[p])
        self.calls += 1
        loss, lap, grad_sq = (self.scalars[k].numpy() for k in SCALARS)
        return loss, lap, grad_sq, DeviceRows(self, p, self.calls - 1)

    def state_host(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(z, m, v) as the next call would read them, copied to the host."""
        held = self.state[self.calls % 2]
        return held["z"].numpy(), held["m"].numpy(), held["v"].numpy()
