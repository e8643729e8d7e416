"""Restarts: each tile restored K times from independent seeds, batched, and averaged.

Restart 0 keeps the tile's own seed, so one restart is the plain run; sample r * n + j
is restart r of tile j.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .samples import Seed


def restart_seed(seed: Seed, restart: int) -> Seed:
    """Restart 0 keeps the tile's seed; restart r > 0 appends r, an independent stream."""
    if restart == 0:
        return seed
    return (*seed, restart) if isinstance(seed, tuple) else (seed, restart)


def mean_restarts(parts: Sequence[np.ndarray], restarts: int, n: int) -> List[np.ndarray]:
    """Per tile, the mean of its ``restarts`` reconstructions (sample r * n + j)."""
    if restarts == 1:
        return list(parts)
    return [
        np.asarray(np.mean([parts[r * n + j] for r in range(restarts)], axis=0, dtype=np.float32)) for j in range(n)
    ]


class RestartMean:
    """Blends the restarts of a unit's tiles into the mean of their blends (the blend is
    linear), for the joint stop's Laplacian."""

    def __init__(self, blender: Any, restarts: int, n: int):
        self.blender, self.restarts, self.n = blender, restarts, n

    def start(self) -> None:
        self.blender.start()

    def add(self, index: int, x0: np.ndarray) -> None:
        self.blender.add(index % self.n, x0 / np.float32(self.restarts))

    def result(self) -> np.ndarray:
        return self.blender.result()


def per_tile(callback: Optional[Callable[[Dict[str, Any]], None]], restarts: int):
    """A loop callback that counts tiles, not samples, when each tile runs ``restarts`` times."""
    if callback is None or restarts == 1:
        return callback

    def cb(info: Dict[str, Any]) -> None:
        info.update(done=info["done"] // restarts, total=info["total"] // restarts)
        callback(info)

    return cb
