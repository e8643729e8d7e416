"""Worker threads: each keeps a Restorer open and runs the queue's jobs through it.

A job is restored exactly as ``diip-run`` restores a file (the same reading, layout,
loop and atomic writer), so its PNG is byte-identical to ``diip-run``'s with the same
options.  Per iteration the loop's callback updates the job's progress (iteration, loss,
ETA) and, at most every ``preview_every`` seconds, its preview PNG; it is also where a
cancellation, the job's time limit or a shutdown stops the loop.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..runtime.commands.jobs import finish_job
from ..runtime.images.codec import read_image, save_image
from ..runtime.images.layout import ImageLayout
from ..runtime.images.outputs import Job
from ..runtime.restorer import OpenRestorers
from .store import JobRow, JobStore


class Stopped(Exception):
    """The loop was stopped from outside: ``reason`` is cancel, timeout or shutdown."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def job_files(store: JobStore, job: JobRow) -> Job:
    d = store.job_dir(job.id)
    return Job(d / job.input, d / "result.png", d / "result.json")


class Progress:
    """The loop's listener for one job: progress into the store, a preview PNG, and the
    checks that stop the job."""

    def __init__(
        self,
        store: JobStore,
        job: JobRow,
        layout: ImageLayout,
        max_iters: int,
        should_stop: Callable[[], Optional[str]],
        preview_every: float = 1.0,
    ):
        self.store, self.job, self.layout, self.max_iters = store, job, layout, max_iters
        self.should_stop, self.preview_every = should_stop, preview_every
        self.t0 = time.perf_counter()
        self.last_write = self.last_preview = 0.0
        self.curve: List[float] = []  # the summed loss per iteration of the current unit
        h, w, _ = layout.shape
        self.preview = np.zeros((layout.plan.height, layout.plan.width, layout.shape[2]), dtype=np.float32)
        self.preview[:h, :w] = layout.tiles.image.transpose(1, 2, 0)[:h, :w] * 0.5 + 0.5
        self.tiles = dict(enumerate(layout.plan.tiles))
        self.last: Dict[str, Any] = {}
        self.previews = 0  # preview PNGs written so far (the page reloads it when this grows)

    def __call__(self, info: Dict[str, Any]) -> None:
        reason = self.should_stop()
        if reason is not None:
            raise Stopped(reason)
        unit = int(info.get("unit", 0))
        k = int(np.max(info["k"])) if len(info["k"]) else 0
        loss = float(np.sum(info["loss"]))
        if k == 0:
            self.curve = []
        self.curve.append(loss)
        units = len(self.layout.units)
        fraction = (unit + (k + 1) / self.max_iters) / units  # an upper bound: a stop comes at the cap at the latest
        elapsed = time.perf_counter() - self.t0
        now = time.monotonic()
        if "image" in info and now - self.last_preview >= self.preview_every:
            self._preview(unit, info["image"][0])
            self.last_preview = now
        self.last = {
            "iteration": k,
            "max_iters": self.max_iters,
            "unit": unit,
            "units": units,
            "loss": loss,
            "curve": [round(v, 6) for v in self.curve[-2000:]],
            "elapsed_s": round(elapsed, 2),
            "eta_s": round(elapsed / max(fraction, 1e-9) * (1 - fraction), 1),
            "preview": self.previews,
        }
        if now - self.last_write >= 0.25 or k == 0:
            self.flush()
            self.last_write = now

    def flush(self) -> None:
        """The latest progress into the store (the last iterations, after the loop)."""
        if self.last:
            self.store.progress(self.job.id, self.last)

    def _preview(self, unit: int, region: np.ndarray) -> None:
        """The unit's current blended x0 over the input, written as preview.png."""
        tiles = [self.tiles[i] for i in self.layout.units[unit]]
        y0, x0 = min(t.y for t in tiles), min(t.x for t in tiles)
        c, rh, rw = region.shape
        self.preview[y0 : y0 + rh, x0 : x0 + rw] = np.clip(region.transpose(1, 2, 0) * 0.5 + 0.5, 0, 1)
        h, w, _ = self.layout.shape
        save_image(self.store.job_dir(self.job.id) / "preview.png", self.preview[:h, :w])
        self.previews += 1


class Workers:
    """``count`` threads over one store, each with its own Restorer(s)."""

    def __init__(
        self,
        store: JobStore,
        model_dir: Path,
        backend: str = "auto",
        threads: Optional[int] = None,
        count: int = 1,
        job_timeout: Optional[float] = None,
        preview_every: float = 1.0,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
        ray: Any = None,
    ):
        self.store, self.model_dir, self.backend, self.threads = store, Path(model_dir), backend, threads
        self.count, self.job_timeout, self.preview_every, self.log = count, job_timeout, preview_every, log
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.flags: Dict[str, str] = {}  # running job id -> why it must stop
        self.running: Dict[str, float] = {}  # running job id -> start time
        self.iterations = 0  # tile-iterations done since start, for the metrics
        self.threads_: List[threading.Thread] = []
        self.lock = threading.Lock()
        self.ray = ray  # a connected ray module: each worker thread drives one actor instead

    def start(self) -> None:
        for i in range(self.count):
            loop = self._loop if self.ray is None else self._loop_ray
            t = threading.Thread(target=loop, name=f"diip-worker-{i}", daemon=True)
            t.start()
            self.threads_.append(t)

    def notify(self) -> None:
        self.wake.set()

    def cancel(self, job_id: str) -> None:
        with self.lock:
            if job_id in self.running:
                self.flags[job_id] = "cancel"

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; running ones stop at their next iteration and go back to the
        queue, to restart from their input when the server comes back."""
        self.stopping.set()
        with self.lock:
            for job_id in self.running:
                self.flags.setdefault(job_id, "shutdown")
        self.wake.set()
        for t in self.threads_:
            t.join(timeout)

    def _next(self) -> Optional[Tuple[JobRow, float]]:
        """The next queued job, now running here, and when it started; waits for one, and
        gives None once the workers are stopping."""
        while not self.stopping.is_set():
            job = self.store.claim()
            if job is not None:
                started = time.perf_counter()
                with self.lock:
                    self.running[job.id] = started
                return job, started
            self.wake.wait(0.5)
            self.wake.clear()
        return None

    def _loop(self) -> None:
        opened = OpenRestorers(self.model_dir, self.backend, self.threads)
        try:
            while (claimed := self._next()) is not None:
                self._run(*claimed, opened)
        finally:
            opened.close()

    def _loop_ray(self) -> None:
        """One Ray actor per thread: the job runs in the actor, which writes its pair to
        the shared data folder; progress is its state alone (no preview from afar)."""
        from ..runtime.commands.ray_runner import RunOn, _Worker

        ray = self.ray
        actor_class = ray.remote(num_cpus=self.threads or 1)(_Worker)

        def new_actor() -> Any:
            return actor_class.remote(RunOn(str(self.model_dir), self.backend, self.threads, {}))

        actor = new_actor()
        while (claimed := self._next()) is not None:
            job, started = claimed
            ref = actor.run_with.remote(job_files(self.store, job), job.options)
            reason = None
            while reason is None:
                done, _ = ray.wait([ref], timeout=0.2)
                if done:
                    break
                reason = self._should_stop(job.id, started)
            if reason is not None:
                ray.kill(actor)  # the job stops with its actor; a fresh one takes the next
                actor = new_actor()
                result: Dict[str, Any] = {"ok": False, "stopped": reason}
            else:
                try:
                    result = ray.get(ref)
                except Exception as e:
                    result = {"ok": False, "error": f"its worker died ({str(e).splitlines()[0][:200]})"}
                    actor = new_actor()
            self._finish(job, started, result)

    def _finish(self, job: JobRow, started: float, result: Dict[str, Any]) -> None:
        reason = result.get("stopped")
        state = "done" if result["ok"] else {"cancel": "cancelled", "shutdown": "queued"}.get(str(reason), "failed")
        error = result.get("error")
        if reason == "timeout":
            error = f"time limit of {self.job_timeout:g} s reached"
        report = result.get("report")
        with self.lock:
            self.running.pop(job.id, None)
            self.flags.pop(job.id, None)
            if report:
                self.iterations += int(report["iterations_run"])
        self.store.finish(job.id, state, report=report, error=error)
        self.log(
            json.dumps(
                {
                    "event": "job",
                    "id": job.id,
                    "state": state,
                    "file": job.filename,
                    "error": error,
                    "seconds": round(time.perf_counter() - started, 3),
                    "stop_iteration": report.get("stop_iteration") if report else None,
                }
            )
        )

    def _should_stop(self, job_id: str, started: float) -> Optional[str]:
        if job_id in self.flags:
            return self.flags[job_id]
        if self.job_timeout is not None and time.perf_counter() - started > self.job_timeout:
            return "timeout"
        return None

    def _run(self, job: JobRow, started: float, opened: OpenRestorers) -> None:
        result: Dict[str, Any]
        try:
            r = opened.get(**job.options)
            files = job_files(self.store, job)
            img, notes = read_image(files.source, r.manifest.channels, r.settings.max_pixels)
            layout = r.layout(img)
            listener = Progress(
                self.store,
                job,
                layout,
                r.settings.max_iters,
                lambda: self._should_stop(job.id, started),
                self.preview_every,
            )
            restored, report = r.restore_layout(layout, listener)
            listener.flush()
            result = {"ok": True, "report": finish_job(files, img, restored, notes, report)}
        except Stopped as s:
            result = {"ok": False, "stopped": s.reason}
        except Exception as e:
            result = {"ok": False, "error": str(e).splitlines()[0] if str(e) else type(e).__name__}
        self._finish(job, started, result)
