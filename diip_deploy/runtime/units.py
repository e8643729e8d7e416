"""Typed records that travel between a Restorer and whoever schedules its work (the plain
loop, a Ray driver): small and picklable, so a worker can restore one unit of a huge photo
and the driver blend it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np


@dataclass
class UnitResult:
    """One unit of an image's tiles restored: a region sharing one stop (image scope) or a
    chunk of tiles each stopping alone (tile scope)."""

    parts: List[np.ndarray]  # each tile's x0, [C, th, tw] in [-1, 1], in the unit's order
    stops: List[int]  # one per stop decision (1 for a region, one per tile in the tile scope)
    reasons: List[str]
    iterations_run: int  # tile-iterations
    seconds: float
    history: Optional[Dict[str, list]] = None  # when the unit made one stop decision
    backend: str = ""
    loop: str = "host"  # where z and the optimiser's moments lived (optimise/device_loop.py)
    batch: int = 0  # tiles per graph call it ran with (the restorer's, resolved for its backend)
    residual_corr: List[float] = field(default_factory=list)  # the guard's measure, per decision
    reverted: int = 0  # decisions where the guard returned the input
    peak_rss_mb: float = 0.0
    device_memory_mb: Optional[float] = None


@dataclass(frozen=True)
class FileTask:
    """Read, restore and write input ``job`` whole (a photo of one tile unit)."""

    job: int


@dataclass(frozen=True)
class UnitTask:
    """Restore tile unit ``unit`` of input ``job``, which the driver read and assembles."""

    job: int
    unit: int
