"""diip-serve under load: jobs per minute and the latency to the first preview, with 1 and
2 workers (1 ONNX Runtime thread each), on 64x64 and 256x256 photos, against a real
server on 127.0.0.1 started here for each setting; prints JSON and writes it.

    python bench/serve.py --json bench/results/serve.json

Every job of a setting is submitted at once (the queue holds them), so jobs per minute is
the server's throughput; "first preview" is the time from the upload's 202 to the first
preview PNG the job's progress reports.  The options cap the iterations (--max-iters) so a
run fits a few minutes on 2 cores; per-iteration cost is what scales.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, data: bytes, options: dict) -> str:
    b = "diipbench"
    body = (
        (
            f'--{b}\r\nContent-Disposition: form-data; name="options"\r\n\r\n{json.dumps(options)}\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{b}--\r\n".encode()
    )
    req = urllib.request.Request(
        url + "/v1/jobs", data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={b}"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["id"]


def _photo(size: int) -> bytes:
    """A noisy crop of a held-out example photo, tiled up to ``size``."""
    from PIL import Image

    src = np.asarray(Image.open(REPO / "examples" / "chelsea_noise25.png").convert("RGB"))
    reps = -(-size // src.shape[0])
    img = np.tile(src, (reps, reps, 1))[:size, :size]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def run_setting(export: Path, workers: int, size: int, jobs: int, options: dict) -> dict:
    port = _port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "diip_deploy.serve.cli",
                "--model",
                str(export),
                "--data",
                f"{tmp}/data",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--threads",
                "1",
                "--backend",
                "ort-cpu",
                "--preview-every",
                "0.2",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(300):
                try:
                    _get(url + "/healthz")
                    break
                except OSError:
                    time.sleep(0.1)
            data = _photo(size)
            t0 = time.perf_counter()
            submitted = {}
            for _ in range(jobs):
                submitted[_post(url, data, options)] = time.perf_counter()
            first_preview: dict = {}
            done: dict = {}
            while len(done) < jobs:
                for job_id, t_sub in submitted.items():
                    if job_id in done:
                        continue
                    job = _get(f"{url}/v1/jobs/{job_id}")
                    if job.get("preview", 0) >= 1 and job_id not in first_preview:
                        first_preview[job_id] = time.perf_counter() - t_sub
                    if job["state"] in ("done", "failed", "cancelled"):
                        assert job["state"] == "done", job
                        done[job_id] = time.perf_counter()
                time.sleep(0.05)
            wall = max(done.values()) - t0
            starts = sorted(first_preview.values())
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return {
        "workers": workers,
        "size": f"{size}x{size}",
        "jobs": jobs,
        "seconds": round(wall, 2),
        "jobs_per_minute": round(60 * jobs / wall, 2),
        "first_preview_s": {
            "min": round(starts[0], 2),
            "median": round(statistics.median(starts), 2),
            "max": round(starts[-1], 2),
        }
        if starts
        else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export")
    ap.add_argument("--max-iters", type=int, default=20)
    ap.add_argument("--jobs-small", type=int, default=8, help="64x64 jobs per setting")
    ap.add_argument("--jobs-large", type=int, default=2, help="256x256 jobs per setting")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from diip_deploy.bench.report import emit

    options = {"max_iters": args.max_iters, "stop": "none"}
    rows = [
        run_setting(args.export, w, size, n, options)
        for size, n in ((64, args.jobs_small), (256, args.jobs_large))
        for w in (1, 2)
    ]
    by = {(r["size"], r["workers"]): r["jobs_per_minute"] for r in rows}
    emit(
        {
            "benchmark": "diip-serve load",
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "cpus": 2,
            "model": str(args.export.relative_to(REPO)) if args.export.is_relative_to(REPO) else str(args.export),
            "options": options,
            "threads_per_worker": 1,
            "rows": rows,
            "ratio_2_over_1_workers": {s: round(by[(s, 2)] / by[(s, 1)], 3) for s in ("64x64", "256x256")},
            "note": "first_preview_s counts from the upload's 202, so it includes the wait in the queue",
        },
        args.json,
    )


if __name__ == "__main__":
    main()
