"""``diip-serve``: the restoration service, started by one command.

Binds to 127.0.0.1 unless told otherwise.  SIGTERM or Ctrl-C stop it gracefully: no new
job starts, running jobs stop at their next iteration and go back to the queue, and a
restarted server runs them again from their inputs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import click

from ..cli_common import CommandError, OneLineErrors
from ..runtime.backends.select import BACKENDS
from .uploads import Limits


@click.command(cls=OneLineErrors, name="diip-serve")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path), help="Export folder.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    default=Path("diip-serve-data"),
    show_default=True,
    help="Jobs' SQLite database, inputs and outputs.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker threads, each with its own Restorer (with --ray: Ray actors).",
)
@click.option("--ray", is_flag=True, help="Run the jobs on Ray actors: RAY_ADDRESS's cluster, or a local one.")
@click.option("--ray-address", default=None, help="The Ray cluster to join (implies --ray); auto: the running one.")
@click.option("--backend", type=click.Choice(("auto",) + BACKENDS), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads per worker for ONNX Runtime.")
@click.option(
    "--token",
    envvar="DIIP_SERVE_TOKEN",
    default=None,
    help="Bearer token every route but /healthz asks for (or DIIP_SERVE_TOKEN).",
)
@click.option(
    "--queue-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Queued jobs at most; further uploads get 429.",
)
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=50, show_default=True)
@click.option("--max-pixels", type=click.IntRange(min=1), default=50_000_000, show_default=True)
@click.option(
    "--job-timeout",
    type=click.FloatRange(min=0),
    default=4 * 3600.0,
    show_default=True,
    help="Seconds a job may run before it fails (0: no limit; a 12-megapixel photo takes hours on a CPU).",
)
@click.option(
    "--job-max-iters",
    type=click.IntRange(min=1),
    default=Limits.max_iters,
    show_default=True,
    help="The largest max_iters a job may ask for.",
)
@click.option(
    "--job-max-restarts",
    type=click.IntRange(min=1),
    default=Limits.max_restarts,
    show_default=True,
    help="The most restarts a job may ask for.",
)
@click.option(
    "--preview-every",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds between a job's preview PNGs.",
)
@click.option(
    "--keep-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Delete finished jobs older than this (default: keep them).",
)
def main(
    model_dir: Path,
    host: str,
    port: int,
    data_dir: Path,
    workers: int,
    backend: str,
    threads: Optional[int],
    ray: bool,
    ray_address: Optional[str],
    token: Optional[str],
    queue_size: int,
    max_upload_mb: float,
    max_pixels: int,
    job_timeout: float,
    job_max_iters: int,
    job_max_restarts: int,
    preview_every: float,
    keep_hours: Optional[float],
) -> None:
    """Serve DIIP restoration over HTTP, with a web page at / (pip install '.[serve]')."""
    try:
        import uvicorn
    except ImportError:
        raise CommandError("diip-serve needs its extra: pip install '.[serve]'") from None
    from ..manifest import ManifestError, load_manifest
    from .app import ServeConfig, build_app
    from .store import JobStore
    from .workers import Workers

    try:
        manifest = load_manifest(model_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
    except (ManifestError, OSError) as e:
        raise CommandError(str(e)) from None
    cluster = None
    if ray or ray_address:
        from ..runtime.commands.ray_runner import RayUnavailable, connect

        try:
            cluster = connect(ray_address or os.environ.get("RAY_ADDRESS") or None)
        except RayUnavailable as e:
            raise CommandError(str(e)) from None
    store = JobStore(data_dir)
    timeout = job_timeout or None
    pool = Workers(store, model_dir, backend, threads, workers, timeout, preview_every, ray=cluster)
    config = ServeConfig(
        manifest,
        data_dir,
        Limits(int(max_upload_mb * 2**20), max_pixels, job_max_iters, job_max_restarts),
        queue_size,
        token,
        keep_hours * 3600 if keep_hours else None,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        click.echo("diip-serve: warning: listening beyond this machine without --token", err=True)
    click.echo(
        f"diip-serve: http://{host}:{port}/ (model {model_dir}, {workers} worker(s), data {data_dir}, "
        f"pid {os.getpid()})",
        err=True,
    )
    sys.stdout.flush()
    uvicorn.run(build_app(config, pool), host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)


if __name__ == "__main__":
    main()
