"""``Restorer``: one model and one backend, opened once, restoring arrays.

The CLI, the benchmarks, the Ray workers and the service all go through it.  An image is
laid out in overlapping tiles of the model's tile size (``images/layout.py``), each with
its own seed; the tiles of a unit run through the loop ``batch`` per graph call and are
blended back.  By default the tiles of a region share one stop, so the optimiser state
held at once grows with the region and the batch, not with the image; with the tile
scope every tile stops on its own.  The residual guard then judges each stop decision.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..manifest import Manifest, load_manifest
from ..settings import RestoreSettings
from .backends.select import Selection, default_batch, device_loop_graph, open_chain, select_backend
from .images.layout import ImageAssembly, ImageLayout, ImageTiling, Subset
from .images.tiling import Blender, sub_plan
from .optimise.guard import judge, keeps_restoration
from .optimise.joint import restore_joint
from .optimise.loop import restore_iter
from .optimise.restarts import RestartMean, mean_restarts, per_tile, restart_seed
from .report import image_report, peak_rss_bytes
from .units import UnitResult

Callback = Optional[Callable[[Dict[str, Any]], None]]


def _offset_progress(callback: Callback, unit: int, done_before: int, total: int) -> Callback:
    """A unit's loop callback, with tiles done / total counted over the whole image and
    the unit's index added (a preview places the unit's ``image`` by it)."""
    if callback is None:
        return None

    def cb(info: Dict[str, Any]) -> None:
        info.update(done=done_before + info["done"], total=total, unit=unit)
        callback(info)

    return cb


class Restorer:
    """Opens a manifest and a backend once; ``restore_array`` uses them.  ``options`` are
    ``RestoreSettings`` names (an unknown one is an error naming the nearest)."""

    def __init__(
        self,
        model_dir: Path | str,
        backend: str = "auto",
        threads: Optional[int] = None,
        manifest: Optional[Manifest] = None,
        **options: Any,
    ):
        self.manifest, settings = self.check(model_dir, manifest, **options)
        self.notes = self.manifest.settings_notes(**options)
        self.selection: Selection = select_backend(self.manifest, backend, settings.precision, threads)
        self._configure(settings)
        loop_graph = device_loop_graph(self.manifest, self.selection.backend, self.settings)
        self.chain = open_chain(
            self.manifest,
            self.selection.backend,
            self.settings.gradient,
            threads,
            prefer_fused=self.settings.steps_per_eval == 1,  # reusing eps needs the per-step graph
            precision=self.settings.precision,
            loop_graph=loop_graph,
            clamp_gradient=self.settings.clamp_gradient,
        )
        self.loop = "host" if loop_graph is None else "device"

    @staticmethod
    def check(
        model_dir: Path | str, manifest: Optional[Manifest] = None, **options: Any
    ) -> Tuple[Manifest, RestoreSettings]:
        """The manifest and settings a Restorer would use, checked, with no backend opened
        (what a driver checks before handing work to workers)."""
        manifest = manifest if manifest is not None else load_manifest(model_dir)
        settings = manifest.settings(**options)
        ImageTiling(manifest, settings)
        return manifest, settings

    CHAIN_FIELDS = ("gradient", "precision", "loop", "clamp_gradient")  # what decides which graphs are open

    def with_options(self, **options: Any) -> Optional[Restorer]:
        """A Restorer with other options over this one's open chain, or None where they need
        other graphs (another gradient, precision or loop).  Closing it closes nothing."""
        settings = self.manifest.settings(**options)
        if settings.precision == "auto":
            settings = replace(settings, precision=self.selection.precision)
        if any(getattr(settings, f) != getattr(self.settings, f) for f in self.CHAIN_FIELDS):
            return None
        if settings.steps_per_eval > 1 and "unet" not in self.chain.runners:
            return None  # this chain opened only a fused graph: no eps to reuse
        twin = copy.copy(self)
        twin._configure(settings)
        twin.close = lambda: None  # type: ignore[method-assign]
        return twin

    def _configure(self, settings: RestoreSettings) -> None:
        """Take ``settings``, with the precision the selection resolved and the batch this
        backend and tile size default to."""
        settings = replace(settings, precision=self.selection.precision)
        tiling = ImageTiling(self.manifest, settings)
        if settings.batch is None:
            settings = replace(settings, batch=default_batch(self.selection.backend, tiling.tile_size))
            tiling = ImageTiling(self.manifest, settings)
        self.settings, self.tiling = settings, tiling

    @property
    def backend(self) -> str:
        return self.selection.backend

    def layout(self, img: np.ndarray, seed: Optional[int] = None) -> ImageLayout:
        """One image's tiles, units and seeds (default seed: the settings')."""
        return self.tiling.layout(img, self.settings.seed if seed is None else int(seed))

    def restore_unit(self, layout: ImageLayout, k: int, callback: Callback = None) -> UnitResult:
        """Unit ``k`` of an image: lockstep with one stop (image scope) or each tile
        stopping alone (tile scope), then the guard."""
        t0 = time.perf_counter()
        s, unit = self.settings, layout.units[k]
        restarts, n = s.restarts, len(unit)
        samples = Subset(layout.tiles, [i for _ in range(restarts) for i in unit])  # restart r of j: r * n + j
        seeds = [restart_seed(layout.seeds[i], r) for r in range(restarts) for i in unit]
        progress = per_tile(callback, restarts)
        if s.stop_scope == "image":
            blend = Blender(sub_plan(layout.plan, unit), layout.shape[2])
            assembler = blend if restarts == 1 else RestartMean(blend, restarts, n)
            joint = restore_joint(
                self.chain, samples, s, assembler, seeds, s.batch, progress, self.early_guard(layout, unit)
            )
            parts = mean_restarts(joint.parts, restarts, n)
            history: Optional[Dict[str, List[Any]]] = joint.history
            stops, reasons = [joint.stop_iteration], [joint.stop_reason]
            iters = joint.iterations_run * len(samples)
            groups = [(list(range(n)), joint.x0)]  # the guard judges the blended region
        else:
            done = dict(restore_iter(self.chain, samples, s, seeds, s.batch, progress))
            ordered = [done[j] for j in range(len(samples))]
            parts = mean_restarts([r.x0 for r in ordered], restarts, n)
            stops, reasons = [r.stop_iteration for r in ordered], [r.stop_reason for r in ordered]
            iters = sum(r.iterations_run for r in ordered)
            history = ordered[0].history if len(ordered) == 1 else None
            groups = [([j], parts[j]) for j in range(n)]  # the guard judges each tile
        corrs, reverted = self.guard(layout, unit, parts, groups)
        device = [b for b in (r.device_memory_bytes() for r in self.chain.runners.values()) if b is not None]
        return UnitResult(
            parts=parts,
            stops=stops,
            reasons=reasons,
            iterations_run=int(iters),
            seconds=time.perf_counter() - t0,
            history=history,
            backend=self.backend,
            loop=self.loop,
            batch=int(s.batch or 0),
            residual_corr=corrs,
            reverted=reverted,
            peak_rss_mb=round(peak_rss_bytes() / 2**20, 1),
            device_memory_mb=round(sum(device) / 2**20, 1) if device else None,
        )

    def early_guard(self, layout: ImageLayout, unit: Sequence[int]) -> Optional[Callable[[np.ndarray], bool]]:
        """The joint loop's early question (``guard_at``): would the guard revert this
        region's blended reconstruction as it stands?  None where there is no question."""
        s = self.settings
        if not s.guard_at or s.guard_at >= s.max_iters or keeps_restoration(1.0, s.residual_guard):
            return None
        damaged = layout.blend(list(unit), lambda i: layout.tiles[i])
        return lambda image: not judge([(image, lambda: damaged)], s.residual_guard)[0][1]

    def guard(
        self,
        layout: ImageLayout,
        unit: Sequence[int],
        parts: List[np.ndarray],
        groups: List[Tuple[List[int], np.ndarray]],
    ) -> Tuple[List[float], int]:
        """The residual guard over each (positions in ``unit``, their restored image) group:
        a group it does not keep gets the input's tiles back, in ``parts``.  Returns each
        group's correlation and how many groups were reverted."""

        def damaged(group: List[int]) -> Callable[[], np.ndarray]:
            if len(group) == 1:
                return lambda: layout.tiles[unit[group[0]]]
            return lambda: layout.blend([unit[j] for j in group], lambda i: layout.tiles[i])

        verdicts = judge(((restored, damaged(group)) for group, restored in groups), self.settings.residual_guard)
        for (group, _), (_, kept) in zip(groups, verdicts):
            if not kept:
                for j in group:
                    parts[j] = layout.tiles[unit[j]]
        return [c for c, _ in verdicts], sum(not kept for _, kept in verdicts)

    def report(self, layout: ImageLayout, results: Sequence[UnitResult]) -> Dict[str, Any]:
        return image_report(self.settings, layout, self.manifest.chain_spec.timesteps, results, self.notes)

    def restore_layout(self, layout: ImageLayout, callback: Callback = None) -> Tuple[np.ndarray, Dict[str, Any]]:
        """(restored HxWxC in [0, 1], report) for an image already laid out."""
        starts = np.cumsum([0] + [len(u) for u in layout.units])
        assembly = ImageAssembly(layout)
        for k in range(len(layout.units)):
            assembly.add(
                k, self.restore_unit(layout, k, _offset_progress(callback, k, int(starts[k]), len(layout.plan)))
            )
        return assembly.restored(), self.report(layout, assembly.stats)

    def restore_array(
        self, img: np.ndarray, seed: Optional[int] = None, callback: Callback = None
    ) -> Tuple[np.ndarray, Dict[str, Any]]:
        """Restore an HxWxC image in [0, 1]: (restored HxWxC in [0, 1], report)."""
        return self.restore_layout(self.layout(img, seed), callback)

    def close(self) -> None:
        self.chain.close()

    def __enter__(self) -> Restorer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class OpenRestorers:
    """Restorers of one model and backend, one per set of open graphs (gradient, precision,
    loop), each opened once and reused for any options those graphs serve: what a
    long-lived worker (a service thread, a Ray actor) keeps between jobs."""

    def __init__(self, model_dir: Path | str, backend: str = "auto", threads: Optional[int] = None):
        self.model_dir, self.backend, self.threads = model_dir, backend, threads
        self.opened: List[Restorer] = []

    def get(self, **options: Any) -> Restorer:
        for base in self.opened:
            twin = base.with_options(**options)
            if twin is not None:
                return twin
        self.opened.append(Restorer(self.model_dir, self.backend, self.threads, **options))
        return self.opened[-1]

    def close(self) -> None:
        while self.opened:
            self.opened.pop().close()
