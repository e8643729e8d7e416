"""``diip-run --ray``: a folder of photos, or one huge photo's tiles, over a Ray cluster.

Each worker is an actor that opens one ``Restorer`` (model + backend) and keeps it.  A
photo whose tiles form one unit (see ``ImageTiling.units``) is one task: the worker reads,
restores and writes it through the same atomic, collision-free writer and per-image
function as the plain run (``jobs.restore_job``).  A bigger photo is read once by the
driver, put in the object store, and each of its units (regions that share a stop, with
their own seeds) is a task; the driver blends the units in unit order and writes the pair
with the same function (``jobs.finish_job``).  Either way the bytes equal a plain
``diip-run`` with the same options.  Actors ask for one GPU each on GPU backends and for
``threads`` CPUs otherwise; Ray restarts an actor that dies and retries its task, and
since every pair is renamed into place last, a retried image is never half-written.  Ray
is an optional extra (``pip install '.[ray]'``); nothing else imports this module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from ...manifest import load_manifest
from ..backends.cpu_variants import resolve_precision
from ..backends.select import GPU_BACKENDS, select_backend
from ..images.layout import ImageAssembly, ImageLayout, ImageTiling
from ..images.outputs import Job
from ..restorer import OpenRestorers, Restorer
from ..units import FileTask, UnitTask

MAX_RESTARTS = 2  # Ray restarts a dead actor and retries its task this often
Task = Union[FileTask, UnitTask]


class RayUnavailable(Exception):
    """Ray is not installed or the cluster cannot be reached; one line says which."""


@dataclass(frozen=True)
class RunOn:
    """What every actor opens: the model, the backend and the run's options (settings
    names, as ``Restorer`` takes them; None: the export's default)."""

    model_dir: str
    backend: str = "auto"
    threads: Optional[int] = None
    options: Dict[str, Any] = field(default_factory=dict)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray needs Ray: pip install 'ray>=2.9' (or '.[ray]' in the checkout)") from None
    return ray


def _one_line(source: str, e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if text.startswith(source) else f"{source}: {text}"


class _Worker:
    """One Restorer per actor, opened once; restores whole files or units of a photo the
    driver holds, and reports one line per failure instead of dying."""

    def __init__(self, on: RunOn):
        self.restorer = Restorer(on.model_dir, on.backend, on.threads, **on.options)
        self.pool = OpenRestorers(on.model_dir, on.backend, on.threads)  # the service's jobs, by their options
        self.pool.opened.append(self.restorer)
        self._layout: Optional[Tuple[str, ImageLayout]] = None  # the last photo's, cut once per photo

    def run(self, job: Job, save_plots: bool) -> Dict[str, Any]:
        """Read, restore and write one file."""
        from .jobs import restore_job

        try:
            return {"ok": True, "report": restore_job(self.restorer, job, None, save_plots)}
        except Exception as e:  # one image's failure is a line in the driver's log, not a dead worker
            return {"ok": False, "error": _one_line(str(job.source), e)}

    def run_with(self, job: Job, options: Dict[str, Any]) -> Dict[str, Any]:
        """Read, restore and write one file with other options than the actor's (the
        service's jobs); the open graphs are reused where the options allow."""
        from .jobs import restore_job

        try:
            return {"ok": True, "report": restore_job(self.pool.get(**options), job, None, False)}
        except Exception as e:
            return {"ok": False, "error": _one_line(str(job.source), e)}

    def unit(self, key: str, img: Any, seed: int, k: int) -> Dict[str, Any]:
        """Restore tile unit ``k`` of a photo the driver read; nothing is written here."""
        try:
            if self._layout is None or self._layout[0] != key:
                self._layout = (key, self.restorer.layout(img, seed))
            return {"ok": True, "unit": self.restorer.restore_unit(self._layout[1], k)}
        except Exception as e:
            return {"ok": False, "error": _one_line(key, e)}


def connect(address: Optional[str], num_cpus: Optional[int] = None) -> Any:
    """Join a cluster (an address or "auto") or, for None, start one on this machine
    (which Ray itself points at RAY_ADDRESS when that is set)."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    try:
        if not address:
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        else:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"--ray-address {address}" if address else "--ray"
        raise RayUnavailable(f"{where}: cannot reach the cluster ({str(e).splitlines()[0]})") from None
    return ray


def header_size(path: Path) -> Optional[Tuple[int, int]]:
    """(height, width) from the file's header without decoding it; None if unreadable
    (the worker that gets the file then reports why)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:
        return None
    return h, w


@dataclass
class _Split:
    """A photo restored unit by unit on several workers, assembled here."""

    job: Job
    img: Any
    notes: Dict[str, Any]
    ref: Any  # the image in Ray's object store
    assembly: ImageAssembly
    error: Optional[str] = None
    returned: int = 0


def _tasks(
    jobs: List[Job], tiling: ImageTiling, seed: int, ray: Any, splits: Dict[int, _Split], failed: List[Tuple[int, str]]
) -> Iterator[Task]:
    """Tasks in order, made lazily: a FileTask for a photo of one unit, a UnitTask for each
    unit of a bigger one, which is read here only when its first unit is due.  A photo
    that cannot be read here goes to ``failed``."""
    from ..images.codec import read_image

    for n, job in enumerate(jobs):
        size = header_size(job.source)
        try:
            units = tiling.units(tiling.plan(*size)) if size else []
        except Exception:
            units = []
        if len(units) < 2:
            yield FileTask(n)
            continue
        try:
            img, notes = read_image(job.source, tiling.manifest.channels, tiling.settings.max_pixels)
            layout = tiling.layout(img, seed)  # after EXIF orientation
        except Exception as e:
            failed.append((n, _one_line(str(job.source), e)))
            continue
        splits[n] = _Split(job, img, notes, ray.put(img), ImageAssembly(layout))
        for k in range(len(layout.units)):
            yield UnitTask(n, k)


def same_variant_everywhere(on: RunOn, manifest: Any, precision: str, ray: Any) -> RunOn:
    """The precision (and on a CPU cluster the backend) resolved once, here, and sent to
    every actor: actors on other CPUs would otherwise time and pick variants of their
    own, the outputs would depend on which machine restored what, and the driver's
    report of a split photo would not say what ran.  GPU backends run fp32 unless asked."""
    if precision != "auto":
        return on
    backend = on.backend
    if backend == "auto" and not ray.cluster_resources().get("GPU", 0):
        sel = select_backend(manifest, "auto", "auto", on.threads)
        backend, precision = sel.backend, sel.precision
    else:
        precision = resolve_precision(manifest, backend, "auto") if backend != "auto" else "fp32"
    return replace(on, backend=backend, options={**on.options, "precision": precision})


def run_jobs(
    jobs: List[Job],
    on: RunOn,
    address: Optional[str] = None,
    workers: Optional[int] = None,
    save_plots: bool = False,
    on_result: Callable[[Dict[str, Any], int, int, float], None] = lambda r, done, total, eta: None,
    on_unit: Callable[[str, int, int], None] = lambda source, done, total: None,
    worker_class: type = _Worker,
) -> List[Dict[str, Any]]:
    """Restore ``jobs`` on Ray actors.  ``on_result(result, done, total, eta_seconds)`` per
    image (result: source, ok, and report or error); ``on_unit(source, done, units)`` per
    unit of a split photo."""
    from ..report import image_report
    from .jobs import finish_job

    ray = connect(address, None)
    manifest, settings = Restorer.check(on.model_dir, load_manifest(on.model_dir), **on.options)
    on = same_variant_everywhere(on, manifest, settings.precision, ray)
    manifest, settings = Restorer.check(on.model_dir, manifest, **on.options)  # the precision every actor runs
    tiling = ImageTiling(manifest, settings)
    notes = manifest.settings_notes(**on.options)
    timesteps = list(manifest.chain_spec.timesteps)
    gpu = on.backend in GPU_BACKENDS
    per_actor = {"num_gpus": 1} if gpu else {"num_cpus": on.threads or 1}
    if workers is None:
        res = ray.cluster_resources()
        workers = int(res.get("GPU", 0)) if gpu else int(res.get("CPU", 1) // (on.threads or 1))
    actor = ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS, **per_actor)(worker_class)

    def new_actor() -> Any:
        return actor.remote(on)

    idle = [new_actor() for _ in range(max(1, workers))]
    running: Dict[Any, Tuple[Any, Task]] = {}  # result ref -> (actor, task)
    splits: Dict[int, _Split] = {}
    failed: List[Tuple[int, str]] = []
    tasks = _tasks(jobs, tiling, settings.seed, ray, splits, failed)
    results: List[Dict[str, Any]] = []
    t0 = time.perf_counter()

    def finished(n: int, r: Dict[str, Any]) -> None:
        results.append({"source": str(jobs[n].source), **r})
        done = len(results)
        on_result(results[-1], done, len(jobs), (time.perf_counter() - t0) / done * (len(jobs) - done))

    def dispatch(a: Any, task: Task) -> Any:
        job = jobs[task.job]
        if isinstance(task, FileTask):
            return a.run.remote(job, save_plots)
        return a.unit.remote(str(job.source), splits[task.job].ref, settings.seed, task.unit)

    def unit_back(n: int, k: int, r: Dict[str, Any]) -> None:
        s = splits[n]
        s.returned += 1
        if not r["ok"]:
            s.error = s.error or r["error"]
        elif s.error is None:
            s.assembly.add(k, r["unit"])
            on_unit(str(s.job.source), s.returned, len(s.assembly.layout.units))
        if s.returned < len(s.assembly.layout.units):
            return
        del splits[n]  # frees the pixels and the object-store copy
        if s.error is not None:
            return finished(n, {"ok": False, "error": s.error})
        try:
            restored = s.assembly.restored()
            report = image_report(settings, s.assembly.layout, timesteps, s.assembly.stats, notes)
            finished(n, {"ok": True, "report": finish_job(s.job, s.img, restored, s.notes, report, save_plots)})
        except Exception as e:
            finished(n, {"ok": False, "error": _one_line(str(s.job.source), e)})

    def handle(task: Task, r: Dict[str, Any]) -> None:
        if isinstance(task, FileTask):
            finished(task.job, r)
        else:
            unit_back(task.job, task.unit, r)

    while True:
        while idle:
            task = next(tasks, None)
            while failed:
                n, message = failed.pop(0)
                finished(n, {"ok": False, "error": message})
            if task is None:
                break
            a = idle.pop()
            running[dispatch(a, task)] = (a, task)
        if not running:
            return results
        (ref,), _ = ray.wait(list(running), num_returns=1)
        a, task = running.pop(ref)
        try:
            r = ray.get(ref)
        except ray.exceptions.RayActorError as e:  # died past Ray's restarts: this task fails, a new actor goes on
            source = str(jobs[task.job].source)
            r = {
                "ok": False,
                "error": f"{source}: its worker died and Ray's {MAX_RESTARTS} restarts of it are "
                f"spent ({str(e).splitlines()[0]})",
            }
            a = new_actor()
        idle.append(a)
        handle(task, r)
