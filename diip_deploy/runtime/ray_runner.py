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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .outputs import Job
from .loop import RestoreConfig
from .restorer import ImageAssembly, ImageTiling, Restorer, TileSettings

GPU_BACKENDS = ("tensorrt", "ort-tensorrt", "ort-cuda")
MAX_RESTARTS = 2  # Ray restarts a dead actor and retries its task this often


class RayUnavailable(Exception):
    """Ray is not installed or the cluster cannot be reached; one line says which."""


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

    def __init__(self, model_dir: str, backend: str, threads: Optional[int], tiles: Dict[str, Any],
                 overrides: Dict[str, Any]):
        self.restorer = Restorer(model_dir, backend, threads, TileSettings(**tiles), **overrides)
        self._image: Optional[Tuple[str, Any, Any, Any]] = None  # (key, plan, tiles, seeds) of the last photo

    def run(self, job: Tuple[str, str, str], save_plots: bool) -> Dict[str, Any]:
        """Read, restore and write one file."""
        from .jobs import restore_job

        j = Job(Path(job[0]), Path(job[1]), Path(job[2]))
        try:
            return {"ok": True, "report": restore_job(self.restorer, j, None, save_plots)}
        except Exception as e:  # one image's failure is a line in the driver's log, not a dead worker
            return {"ok": False, "error": _one_line(job[0], e)}

    def unit(self, key: str, img: Any, seed: int, unit: List[int]) -> Dict[str, Any]:
        """Restore the tiles ``unit`` of a photo the driver read; nothing is written here."""
        try:
            if self._image is None or self._image[0] != key:  # tiles are cut once per photo
                self._image = (key, *self.restorer.tiles_of(img, seed))
            _, plan, tiles, seeds = self._image
            return {"ok": True, "unit": self.restorer.restore_unit(tiles, plan, unit, seeds)}
        except Exception as e:
            return {"ok": False, "error": _one_line(key, e)}


def connect(address: str, num_cpus: Optional[int] = None) -> Any:
    """Join a cluster ("auto" or an address) or, for "local", start one on this machine."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        else:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayUnavailable(f"--ray {address}: cannot reach the cluster ({str(e).splitlines()[0]})") from None
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


def _tasks(jobs: List[Job], tiling: ImageTiling, cfg: RestoreConfig, ray: Any, splits: Dict[int, _Split],
           failed: List[Tuple[int, str]]) -> Iterator[Tuple[Any, ...]]:
    """Tasks in order, made lazily: ("file", n) for a photo of one unit, ("unit", n, k) for
    each unit of a bigger one, which is read here only when its first unit is due.  A photo
    that cannot be read here goes to ``failed``."""
    from .images import read_image

    for n, job in enumerate(jobs):
        size = header_size(job.source)
        try:
            units = tiling.units(tiling.plan(*size)) if size else []
        except Exception:
            units = []
        if len(units) < 2:
            yield ("file", n)
            continue
        try:
            img, notes = read_image(job.source, tiling.manifest.channels, tiling.tiles.max_pixels)
            tiling.check_image(img)
            units = tiling.units(tiling.plan(*img.shape[:2]))  # after EXIF orientation
        except Exception as e:
            failed.append((n, _one_line(str(job.source), e)))
            continue
        splits[n] = _Split(job, img, notes, ray.put(img), ImageAssembly(tiling, cfg, img.shape, cfg.seed, units))
        for k in range(len(units)):
            yield ("unit", n, k)


def run_jobs(jobs: List[Job], model_dir: str, backend: str, threads: Optional[int], tiles: TileSettings,
             overrides: Dict[str, Any], address: str = "local", workers: Optional[int] = None, save_plots: bool = False,
             on_result: Callable[[Dict[str, Any], int, int, float], None] = lambda r, done, total, eta: None,
             on_unit: Callable[[str, int, int], None] = lambda source, done, total: None,
             worker_class: type = _Worker) -> List[Dict[str, Any]]:
    """Restore ``jobs`` on Ray actors.  ``on_result(result, done, total, eta_seconds)`` per
    image (result: source, ok, and report or error); ``on_unit(source, done, units)`` per
    unit of a split photo."""
    from .jobs import finish_job

    ray = connect(address, None)
    manifest, cfg, tiles = Restorer.check(model_dir, tiles, **overrides)
    tiling = ImageTiling(manifest, tiles)
    gpu = backend in GPU_BACKENDS
    per_actor = {"num_gpus": 1} if gpu else {"num_cpus": threads or 1}
    if workers is None:
        res = ray.cluster_resources()
        workers = int(res.get("GPU", 0)) if gpu else int(res.get("CPU", 1) // (threads or 1))
    actor = ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS, **per_actor)(worker_class)

    def new_actor() -> Any:
        return actor.remote(model_dir, backend, threads, asdict(tiles), overrides)

    idle = [new_actor() for _ in range(max(1, workers))]
    running: Dict[Any, Tuple[Any, Tuple[Any, ...]]] = {}  # result ref -> (actor, task)
    splits: Dict[int, _Split] = {}
    failed: List[Tuple[int, str]] = []
    tasks = _tasks(jobs, tiling, cfg, ray, splits, failed)
    results: List[Dict[str, Any]] = []
    t0 = time.perf_counter()

    def finished(n: int, r: Dict[str, Any]) -> None:
        results.append({"source": str(jobs[n].source), **r})
        done = len(results)
        on_result(results[-1], done, len(jobs), (time.perf_counter() - t0) / done * (len(jobs) - done))

    def dispatch(a: Any, task: Tuple[Any, ...]) -> Any:
        job = jobs[task[1]]
        if task[0] == "file":
            return a.run.remote((str(job.source), str(job.png), str(job.json)), save_plots)
        s = splits[task[1]]
        return a.unit.remote(str(job.source), s.ref, cfg.seed, s.assembly.units[task[2]])

    def unit_back(n: int, k: int, r: Dict[str, Any]) -> None:
        s = splits[n]
        s.returned += 1
        if not r["ok"]:
            s.error = s.error or r["error"]
        elif s.error is None:
            s.assembly.add(k, r["unit"])
            on_unit(str(s.job.source), s.returned, len(s.assembly.units))
        if s.returned < len(s.assembly.units):
            return
        del splits[n]  # frees the pixels and the object-store copy
        if s.error is not None:
            return finished(n, {"ok": False, "error": s.error})
        try:
            restored, report = s.assembly.result()
            finished(n, {"ok": True, "report": finish_job(s.job, s.img, restored, s.notes, report, save_plots)})
        except Exception as e:
            finished(n, {"ok": False, "error": _one_line(str(s.job.source), e)})

    def handle(task: Tuple[Any, ...], r: Dict[str, Any]) -> None:
        if task[0] == "file":
            finished(task[1], r)
        else:
            unit_back(task[1], task[2], r)

    while True:
        while idle:
            task = next(tasks, None)
            while failed:
                finished(*failed.pop(0))
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
            source = str(jobs[task[1]].source)
            r = {"ok": False, "error": f"{source}: its worker died and Ray's {MAX_RESTARTS} restarts of it are "
                                       f"spent ({str(e).splitlines()[0]})"}
            a = new_actor()
        idle.append(a)
        handle(task, r)
