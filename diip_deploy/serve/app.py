"""The HTTP API and the page: a Starlette app over a JobStore and its Workers.

Routes are versioned under ``/v1``.  Every error is a JSON object ``{"error": "one
line"}`` with a 4xx status.  Job ids are the server's own hex strings, checked before
any file is touched, so no request can name a path on the server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import shutil
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..manifest import Manifest
from .store import FINISHED
from .uploads import Limits, UploadError, check_image, parse_options
from .workers import Workers

STATIC = Path(__file__).parent / "static"
JOB_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass
class ServeConfig:
    """What a server was started with."""

    manifest: Manifest
    data_dir: Path
    limits: Limits = field(default_factory=Limits)
    queue_size: int = 64  # queued jobs at most; beyond that uploads get 429
    token: Optional[str] = None  # bearer token for every route but /healthz
    keep_s: Optional[float] = None  # finished jobs older than this are deleted


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message.splitlines()[0]}, status_code=status)


class UploadTooLarge(Exception):
    """The request body passed its byte limit while it was being read."""


def bounded_body(request: Request, limit: int) -> Request:
    """``request`` whose body reading fails with UploadTooLarge once more than ``limit``
    bytes have arrived: a chunked upload (no Content-Length) or one whose length lies is
    refused as it streams in, never read or spooled to its end first."""
    seen = 0

    async def receive() -> Any:
        nonlocal seen
        message = await request.receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise UploadTooLarge(f"upload is over the limit of {limit} bytes (refused after {seen} bytes)")
        return message

    return Request(request.scope, receive)


class TokenGuard(BaseHTTPMiddleware):
    """``Authorization: Bearer TOKEN`` on every route but /healthz (and ``?token=`` for the
    page's own links and event stream, which browsers cannot give headers)."""

    def __init__(self, app: Any, token: Optional[str]):
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: Any) -> Response:
        if self.token and request.url.path != "/healthz":
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            given = given or request.query_params.get("token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return error("missing or wrong bearer token", 401)
        return await call_next(request)


def build_app(config: ServeConfig, workers: Workers) -> Starlette:
    store = workers.store
    started = time.time()

    def job_or_404(request: Request) -> Any:
        job_id = request.path_params["job_id"]
        job = store.get(job_id) if JOB_ID.match(job_id) else None
        return job if job is not None else error(f"no job {job_id[:40]!r}", 404)

    reserved = [0]  # uploads being checked: they hold a place in the queue until they become jobs or fail

    async def submit(request: Request) -> Response:
        length = int(request.headers.get("content-length") or 0)
        if length > config.limits.max_bytes + 2**20:
            return error(f"upload of {length} bytes is over the limit of {config.limits.max_bytes}", 413)
        if store.counts()["queued"] + reserved[0] >= config.queue_size:  # no await since: one check, one taker
            return error(f"the queue is full ({config.queue_size} jobs); try again later", 429)
        reserved[0] += 1
        try:
            return await accept(bounded_body(request, config.limits.max_bytes + 2**20))
        except UploadTooLarge as e:
            return error(str(e), 413)
        finally:
            reserved[0] -= 1

    async def accept(request: Request) -> Response:
        try:
            form = await request.form(max_files=1, max_fields=4)
        except UploadTooLarge:
            raise
        except Exception as e:
            return error(f"not a multipart form ({type(e).__name__})", 400)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            return error("the form has no file field 'image'", 400)
        data = await upload.read(config.limits.max_bytes + 1)
        options_text = form.get("options") or "{}"
        try:
            options = parse_options(str(options_text), config.manifest, config.limits)
            path = await asyncio.to_thread(
                check_image, data, config.limits, config.manifest.channels, config.data_dir / "incoming"
            )
        except UploadError as e:
            return error(str(e), e.status)
        job_id = path.stem[:16]
        job_dir = store.job_dir(job_id)
        job_dir.mkdir(parents=True)
        path.replace(job_dir / f"input{path.suffix}")
        name = Path(str(upload.filename or "image")).name[:200]
        store.create(name, f"input{path.suffix}", options, job_id)
        workers.notify()
        return JSONResponse({"id": job_id, "state": "queued"}, status_code=202)

    async def show(request: Request) -> Response:
        job = job_or_404(request)
        return job if isinstance(job, Response) else JSONResponse(job.public())

    async def listing(request: Request) -> Response:
        return JSONResponse({"jobs": [j.public() | {"report": None} for j in store.list()], "counts": store.counts()})

    def file_route(name: str, media: str, need_done: bool) -> Any:
        async def serve(request: Request) -> Response:
            job = job_or_404(request)
            if isinstance(job, Response):
                return job
            if need_done and job.state != "done":
                return error(f"job {job.id} is {job.state}, not done", 409)
            path = store.job_dir(job.id) / (name or job.input)
            if not path.is_file():
                return error(f"job {job.id} has no {name or 'input'} yet", 404)
            return FileResponse(path, media_type=media, headers={"cache-control": "no-store"})

        return serve

    async def cancel(request: Request) -> Response:
        job = job_or_404(request)
        if isinstance(job, Response):
            return job
        if job.state in FINISHED:
            return error(f"job {job.id} is already {job.state}", 409)
        store.cancel(job.id)
        workers.cancel(job.id)
        return JSONResponse(
            {"id": job.id, "state": "cancelled" if job.state == "queued" else "cancelling"}, status_code=202
        )

    async def events(request: Request) -> Response:
        job = job_or_404(request)
        if isinstance(job, Response):
            return job

        async def stream() -> AsyncIterator[str]:
            last = None
            while True:
                now = store.get(job.id)
                if now is None:
                    return
                body = json.dumps(now.public())
                if body != last:
                    yield f"event: {now.state}\ndata: {body}\n\n"
                    last = body
                if now.state in FINISHED or await request.is_disconnected():
                    return
                await asyncio.sleep(0.3)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-store"})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "workers": workers.count, "uptime_s": round(time.time() - started, 1)})

    async def metrics(request: Request) -> Response:
        counts = store.counts()
        rate = workers.iterations / max(time.time() - started, 1e-9)
        lines = [
            "# HELP diip_queue_length Jobs waiting for a worker.",
            "# TYPE diip_queue_length gauge",
            f"diip_queue_length {counts['queued']}",
            "# HELP diip_jobs Jobs by state.",
            "# TYPE diip_jobs gauge",
            *[f'diip_jobs{{state="{s}"}} {n}' for s, n in counts.items()],
            "# HELP diip_tile_iterations_per_second Tile-iterations done per second since start.",
            "# TYPE diip_tile_iterations_per_second gauge",
            f"diip_tile_iterations_per_second {rate:.6g}",
        ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def cleanup_loop() -> None:
        while config.keep_s is not None:
            for job_id in store.expired(config.keep_s):
                shutil.rmtree(store.job_dir(job_id), ignore_errors=True)
            await asyncio.sleep(min(60.0, max(config.keep_s / 4, 1.0)))

    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store.recover()
        workers.start()
        task = asyncio.create_task(cleanup_loop())
        yield
        task.cancel()
        await asyncio.to_thread(workers.stop)

    routes = [
        Route("/", page),
        Route("/healthz", health),
        Route("/metrics", metrics),
        Route("/v1/jobs", submit, methods=["POST"]),
        Route("/v1/jobs", listing, methods=["GET"]),
        Route("/v1/jobs/{job_id}", show, methods=["GET"]),
        Route("/v1/jobs/{job_id}", cancel, methods=["DELETE"]),
        Route("/v1/jobs/{job_id}/result.png", file_route("result.png", "image/png", True)),
        Route("/v1/jobs/{job_id}/result.json", file_route("result.json", "application/json", True)),
        Route("/v1/jobs/{job_id}/preview.png", file_route("preview.png", "image/png", False)),
        Route("/v1/jobs/{job_id}/input", file_route("", "application/octet-stream", False)),
        Route("/v1/jobs/{job_id}/events", events),
    ]
    return Starlette(
        routes=routes, middleware=[Middleware(TokenGuard, token=config.token)], lifespan=asynccontextmanager(lifespan)
    )
