"""One input file through a Restorer to its output pair: what the CLI and each Ray worker
do per image, so both write the same bytes.  ``finish_job`` is the writing half, which a
Ray driver also uses for a photo whose tiles were restored by several workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np

from ..images.codec import read_image
from ..images.outputs import Job, write_result
from ..restorer import Restorer
from .progress import ProgressBar, save_before_after, save_history_plot


def restore_job(
    restorer: Restorer,
    job: Job,
    progress_every: Optional[int] = None,
    save_plots: bool = False,
    warn: Callable[[str], None] = lambda m: None,
) -> Dict[str, Any]:
    """Read, restore and write one image; returns the report (with this run's measurements).
    ``progress_every``: show a progress bar refreshed that often (None: no bar)."""
    img, notes = read_image(job.source, restorer.manifest.channels, restorer.settings.max_pixels)
    layout = restorer.layout(img)
    bar: Optional[ProgressBar] = None
    if progress_every is not None:
        tiles = len(layout.plan)
        by_tile = restorer.settings.stop_scope == "tile" or len(layout.units) > 1  # count tiles, not iterations
        desc = job.source.name if tiles == 1 else f"{job.source.name} ({tiles} tiles)"
        bar = ProgressBar(tiles if by_tile else 1, restorer.settings.max_iters, desc, progress_every, tiles)
    try:
        restored, report = restorer.restore_layout(layout, callback=bar)
    finally:
        if bar is not None:
            bar.close()
    return finish_job(job, img, restored, notes, report, save_plots, warn)


def finish_job(
    job: Job,
    img: np.ndarray,
    restored: np.ndarray,
    notes: Dict[str, Any],
    report: Dict[str, Any],
    save_plots: bool = False,
    warn: Callable[[str], None] = lambda m: None,
) -> Dict[str, Any]:
    """Write the output pair (atomically, the PNG's hash in the JSON), then the plots if
    asked; returns the written report with this run's measurements beside it."""
    run = report["run"]
    report = {**write_result(job, restored, {"input": str(job.source), "decoding": notes, **report}), "run": run}
    if save_plots:  # extras come after the restoration is safe on disk
        stem = job.png.with_suffix("")
        try:
            if "history" in report:
                save_history_plot(
                    Path(f"{stem}_curves.png"), report["history"], report["stop_iteration"], report["stop_reason"]
                )
            save_before_after(Path(f"{stem}_before_after.png"), img, restored)
        except (RuntimeError, OSError, ValueError) as e:
            warn(f"{job.source}: restoration saved, plots not: {str(e).splitlines()[0]}")
    return report


def summary_line(job: Job, report: Dict[str, Any]) -> str:
    t = report["tiling"]
    return (
        f"{job.source} -> {job.png}: {t['tiles']} tile(s), stopped at {report['stop_iteration']} "
        f"({report['stop_reason']}), {report['iterations_run']} tile-iterations, {report['run']['seconds']:.1f} s, "
        f"peak RSS {report['run']['peak_rss_mb']:.0f} MB" + _guard_note(report)
    )


def _guard_note(report: Dict[str, Any]) -> str:
    g = report.get("guard")
    if not g or not g["reverted_to_input"]:
        return ""
    return (
        f"; the residual guard kept the input for {g['reverted_to_input']} of {g['judged']} "
        f"{'tiles' if report['tiling']['stop_scope'] == 'tile' else 'regions'} (residual not noise-like)"
    )
