"""``diip-run --ray``: a folder of photos over the workers of a Ray cluster.

Each worker is an actor that opens one ``Restorer`` (model + backend) and keeps it; tasks
are files, handed to idle actors by Ray's ``ActorPool``.  Workers write their results
themselves through the same atomic, collision-free writer and per-image function as the
plain run (``jobs.restore_job``), so outputs are byte-identical to a plain ``diip-run``
with the same options.  Actors ask for one GPU each on GPU backends and for ``threads``
CPUs otherwise; Ray restarts an actor that dies and retries its task, and since every
pair is renamed into place last, a retried image is never half-written.  Ray is an
optional extra (``pip install '.[ray]'``); nothing else imports this module.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Callable, Dict, List, Optional, Tuple

from .outputs import Job
from .restorer import TileSettings

GPU_BACKENDS = ("tensorrt", "ort-tensorrt", "ort-cuda")


class RayUnavailable(Exception):
    """Ray is not installed or the cluster cannot be reached; one line says which."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray needs Ray: pip install 'ray>=2.9' (or '.[ray]' in the checkout)") from None
    return ray


class _Worker:
    """One Restorer per actor, opened once; restores jobs and reports one line per failure."""

    def __init__(self, model_dir: str, backend: str, threads: Optional[int], tiles: Dict[str, Any],
                 overrides: Dict[str, Any]):
        from .restorer import Restorer

        self.restorer = Restorer(model_dir, backend, threads, TileSettings(**tiles), **overrides)

    def run(self, job: Tuple[str, str, str], save_plots: bool) -> Dict[str, Any]:
        from pathlib import Path

        from .jobs import restore_job

        j = Job(Path(job[0]), Path(job[1]), Path(job[2]))
        try:
            report = restore_job(self.restorer, j, None, save_plots)
            return {"source": job[0], "ok": True, "report": report}
        except Exception as e:  # one image's failure is a line in the driver's log, not a dead worker
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            return {"source": job[0], "ok": False, "error": text if text.startswith(job[0]) else f"{job[0]}: {text}"}


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


def run_jobs(jobs: List[Job], model_dir: str, backend: str, threads: Optional[int], tiles: TileSettings,
             overrides: Dict[str, Any], address: str = "local", workers: Optional[int] = None, save_plots: bool = False,
             on_result: Callable[[Dict[str, Any], int, int, float], None] = lambda r, done, total, eta: None
             ) -> List[Dict[str, Any]]:
    """Restore ``jobs`` on Ray actors; ``on_result(result, done, total, eta_seconds)`` per image."""
    ray = connect(address, None)
    from ray.util import ActorPool

    gpu = backend in GPU_BACKENDS
    per_actor = {"num_gpus": 1} if gpu else {"num_cpus": threads or 1}
    if workers is None:
        res = ray.cluster_resources()
        workers = int(res.get("GPU", 0)) if gpu else int(res.get("CPU", 1) // (threads or 1))
    workers = max(1, min(workers, len(jobs)))
    actor = ray.remote(max_restarts=2, max_task_retries=2, **per_actor)(_Worker)
    pool = ActorPool([actor.remote(model_dir, backend, threads, asdict(tiles), overrides) for _ in range(workers)])
    t0 = time.perf_counter()
    results: List[Dict[str, Any]] = []
    for r in pool.map_unordered(lambda a, j: a.run.remote((str(j.source), str(j.png), str(j.json)), save_plots), jobs):
        results.append(r)
        done = len(results)
        on_result(r, done, len(jobs), (time.perf_counter() - t0) / done * (len(jobs) - done))
    return results
