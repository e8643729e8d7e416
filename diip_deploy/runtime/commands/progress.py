"""Listeners for the loop's per-iteration callback: a progress bar and a history plot."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np


def format_step(info: Dict[str, Any]) -> str:
    """One sample's iteration: loss and both criteria."""
    slope = info["slope"][0]
    return (
        f"loss={info['loss'][0]:.5f} slope={'-' if not np.isfinite(slope) else f'{slope:.2e}'} "
        f"lapvar={info['laplacian_var'][0]:.3e}"
    )


def format_batch(info: Dict[str, Any]) -> str:
    """A batch of tiles: how many run, the furthest iteration, the mean loss."""
    return f"running={len(info['k'])} iteration={max(info['k'])} loss={float(np.mean(info['loss'])):.5f}"


def _eta(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class WorkClock:
    """Tile-iterations done and left, for an ETA that counts work, not tiles (a region of
    many tiles finishes all at once).  A running tile may go on to the cap, so the ETA is
    an upper bound, exact where the stop comes at the cap or the guard's early decision."""

    def __init__(self, tiles: int, max_iters: int):
        self.tiles, self.max_iters = tiles, max_iters
        self.work = 0
        self.done = 0
        self.running: Dict[int, int] = {}  # sample of the current unit -> iterations it has run
        self.unit: Any = None
        self.t0 = time.perf_counter()

    def __call__(self, info: Dict[str, Any]) -> None:
        finished = info["done"] > self.done
        if finished or info.get("unit") != self.unit:
            self.running.clear()  # samples finished, or a new unit: the next call lists who still runs
            self.unit, self.done = info.get("unit"), info["done"]
        if not finished:
            self.running.update((int(i), int(k) + 1) for i, k in zip(info["index"], info["k"]))
        self.work += len(info["k"])

    def left(self) -> int:
        return max(0, (self.tiles - self.done) * self.max_iters - sum(self.running.values()))

    @property
    def fraction(self) -> float:
        return self.work / max(1, self.work + self.left())

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def eta(self) -> float:
        return self.elapsed() / max(1, self.work) * self.left()


class ProgressBar:
    """The loop's listener: for one tile, iterations with loss and both criteria; for
    many, tiles done / total with the iteration, loss and an ETA.  A tqdm bar on a
    terminal; elsewhere (logs, CI) one plain line every ``every`` iterations."""

    def __init__(self, tiles: int, max_iters: int, desc: str, every: int = 10, work_tiles: Optional[int] = None):
        """``tiles``: 1 to count iterations (one region), else tiles; ``work_tiles``: the
        image's tiles, which the ETA counts (default ``tiles``)."""
        from tqdm import tqdm

        self.single = tiles == 1
        self.total = max_iters if self.single else tiles
        self.every = max(1, every)
        self.desc = desc
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=self.total,
            desc=desc,
            unit="it" if self.single else "tile",
            leave=True,
            file=sys.stderr,
            disable=not self.tty,
            dynamic_ncols=True,
        )
        self.n = 0
        self.calls = 0
        self.clock = WorkClock(work_tiles or tiles, max_iters)

    def __call__(self, info: Dict[str, Any]) -> None:
        self.calls += 1
        self.clock(info)
        self.n = info["k"][0] + 1 if self.single else info["done"]
        if self.calls % self.every and self.calls != 1:
            return
        text = format_step(info) if self.single else format_batch(info)
        if self.tty:
            if not self.single:
                text += f" work={self.clock.fraction:.0%} eta<={_eta(self.clock.eta())}"
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(self.n - self.bar.n)
        elif self.single:
            eta = f", ETA at most {_eta(self.clock.eta())}" if self.n > 1 else ""
            print(f"{self.desc}: iteration {self.n - 1}/{self.total} {text}{eta}", file=sys.stderr, flush=True)
        else:
            eta = f", {self.clock.fraction:.0%} of the work, ETA at most {_eta(self.clock.eta())}"
            print(f"{self.desc}: tiles {self.n}/{self.total} {text}{eta}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.update(self.n - self.bar.n)
        self.bar.close()


def save_history_plot(
    path: Path,
    history: Dict[str, Any],
    stop_iteration: int,
    stop_reason: str,
    extra_marks: Optional[Dict[str, int]] = None,
) -> None:
    """Loss, smoothed slope and Laplacian variance against iteration, stop marked (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError(
            "plots need matplotlib: pip install '.[bench]' (in the diip-deploy checkout) or pip install matplotlib"
        ) from None
    from ..images.codec import write_atomic

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    series = [
        ("loss", "MSE loss", True),
        ("slope", "smoothed slope", False),
        ("laplacian_var", "Var(Laplacian x0)", False),
    ]
    for ax, (key, title, logy) in zip(axes, series):
        vals = np.array([np.nan if v is None else v for v in history[key]], dtype=float)
        ax.plot(vals, lw=1.2)
        ax.axvline(stop_iteration, color="r", ls="--", lw=1, label=f"stop ({stop_reason}) @ {stop_iteration}")
        for name, k in (extra_marks or {}).items():
            ax.axvline(k, color="g", ls=":", lw=1, label=f"{name} @ {k}")
        if logy:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("iteration")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    write_atomic(Path(path), lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def save_before_after(path: Path, before: np.ndarray, after: np.ndarray) -> None:
    """Input and restoration side by side, upscaled with nearest neighbours for viewing."""
    from ..images.codec import save_image

    gap = np.ones((before.shape[0], 4, before.shape[2]), dtype=np.float32)
    pair = np.concatenate([before, gap, after], axis=1)
    scale = max(1, 256 // before.shape[0])
    save_image(path, np.repeat(np.repeat(pair, scale, axis=0), scale, axis=1))
