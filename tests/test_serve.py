"""diip-serve as people use it: the API through a test client, a real uvicorn server that
is killed and restarted, and a real headless Chromium on the page."""

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO
from images import save, smooth_image
from PIL import Image

pytest.importorskip("starlette", reason="diip-serve's extra is not installed (pip install '.[serve]')")
pytest.importorskip("httpx", reason="the test client needs httpx (pip install '.[test]')")

from starlette.testclient import TestClient  # noqa: E402

from diip_deploy.manifest import load_manifest  # noqa: E402
from diip_deploy.serve.app import ServeConfig, build_app  # noqa: E402
from diip_deploy.serve.store import JobStore  # noqa: E402
from diip_deploy.serve.uploads import Limits  # noqa: E402
from diip_deploy.serve.workers import Workers  # noqa: E402

FAST = {"max_iters": 3, "tile": 16}


def _png_bytes(h=16, w=16, seed=0):
    buf = io.BytesIO()
    Image.fromarray((smooth_image(h, w, seed) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _client(tiny_export, tmp_path, workers=1, **config):
    store = JobStore(tmp_path / "data")
    pool = Workers(
        store, tiny_export, "ort-cpu", 1, workers, config.pop("job_timeout", None), 0.0, log=lambda line: None
    )
    app = build_app(ServeConfig(load_manifest(tiny_export), tmp_path / "data", **config), pool)
    return TestClient(app), pool


def _submit(client, data, options=None, **kw):
    files = {"image": ("photo.png", data, "image/png")}
    return client.post("/v1/jobs", files=files, data={"options": json.dumps(options or {})}, **kw)


def _wait(client, job_id, states=("done", "failed", "cancelled"), timeout=120, **kw):
    t0 = time.time()
    while time.time() - t0 < timeout:
        job = client.get(f"/v1/jobs/{job_id}", **kw).json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s")


def _diip_run_png(tiny_export, tmp_path, data, options):
    """The bytes diip-run writes for the same file and options."""
    from diip_deploy.runtime.commands.cli import main as diip_run

    src = tmp_path / "cli_in" / "photo.png"
    src.parent.mkdir(exist_ok=True)
    shutil.rmtree(tmp_path / "cli_out", ignore_errors=True)
    src.write_bytes(data)
    flags = [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    out = tmp_path / "cli_out"
    r = CliRunner().invoke(diip_run, [str(src), "--model", str(tiny_export), "--out", str(out), "--quiet", *flags])
    assert r.exit_code == 0, r.output
    return (out / "photo.png").read_bytes()


def test_a_job_through_the_api_matches_diip_run(tiny_export, tmp_path):
    data = _png_bytes(20, 24)
    client, _ = _client(tiny_export, tmp_path)
    with client:
        assert client.get("/healthz").json()["ok"]
        r = _submit(client, data, FAST)
        assert r.status_code == 202 and r.json()["state"] == "queued"
        job_id = r.json()["id"]
        job = _wait(client, job_id)
        assert job["state"] == "done" and job["stop"] == {"iteration": 2, "reason": "max_iters"}, job
        assert job["iteration"] == 2 and len(job["curve"]) == 3 and job["eta_s"] >= 0
        png = client.get(f"/v1/jobs/{job_id}/result.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        report = client.get(f"/v1/jobs/{job_id}/result.json").json()
        assert report["png_sha256"] and report["settings"]["max_iters"] == 3
        assert client.get(f"/v1/jobs/{job_id}/preview.png").status_code == 200
        events = client.get(f"/v1/jobs/{job_id}/events").text
        assert "event: done" in events and job_id in events
        listed = client.get("/v1/jobs").json()
        assert [j["id"] for j in listed["jobs"]] == [job_id] and listed["counts"]["done"] == 1
        metrics = client.get("/metrics").text
        assert 'diip_jobs{state="done"} 1' in metrics and "diip_queue_length 0" in metrics
        assert "diip_tile_iterations_per_second" in metrics
        assert client.get("/").status_code == 200 and "<canvas" in client.get("/").text
    assert png.content == _diip_run_png(tiny_export, tmp_path, data, FAST)


def _bomb_png():
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")  # 400 megapixels in a few kB
    return buf.getvalue()


BAD = [
    ("not an image", lambda: b"hello, world" * 10, {}, 415, "not an image"),
    ("truncated", lambda: _png_bytes(32, 32)[:200], {}, 400, "image:"),
    ("bomb", _bomb_png, {}, 413, "over the limit"),
    ("too large", lambda: os.urandom(300_000), {}, 413, "bytes, over the limit"),
    ("unknown option", _png_bytes, {"max_iter": 5}, 400, "did you mean 'max_iters'"),
    ("option out of range", _png_bytes, {"lr": -1}, 400, "lr must be a number > 0"),
    ("option of the wrong type", _png_bytes, {"stop": 3}, 400, "stop must be"),
    ("tile not a multiple", _png_bytes, {"tile": 15}, 400, "multiple"),
]


def test_bad_uploads_get_one_line_4xx_and_the_server_keeps_serving(tiny_export, tmp_path):
    client, _ = _client(tiny_export, tmp_path, limits=Limits(max_bytes=200_000, max_pixels=4_000_000), token="s3cret")
    auth = {"headers": {"Authorization": "Bearer s3cret"}}
    with client:
        for name, make, options, status, words in BAD:
            r = _submit(client, make(), options, **auth)
            assert r.status_code == status, (name, r.text)
            assert words in r.json()["error"] and "\n" not in r.json()["error"], (name, r.text)
        r = client.post("/v1/jobs", files={"image": ("a.png", _png_bytes())}, data={"options": "{not json"}, **auth)
        assert r.status_code == 400 and "not JSON" in r.json()["error"]
        assert client.post("/v1/jobs", data={"options": "{}"}, **auth).status_code == 400  # no image
        assert _submit(client, _png_bytes(), FAST).status_code == 401  # no token
        assert _submit(client, _png_bytes(), FAST, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.get("/v1/jobs").status_code == 401 and client.get("/metrics").status_code == 401
        assert client.get("/healthz").status_code == 200  # health needs no token
        for path in ("/v1/jobs/..%2F..%2Fetc%2Fpasswd", "/v1/jobs/../jobs.sqlite", "/v1/jobs/0123456789abcdef/input"):
            assert client.get(path, **auth).status_code == 404, path
        assert client.get("/v1/jobs", **auth).json()["jobs"] == []  # nothing bad became a job
        r = _submit(client, _png_bytes(), FAST, **auth)
        assert r.status_code == 202
        assert _wait(client, r.json()["id"], **auth)["state"] == "done"
    assert not list((tmp_path / "data" / "incoming").glob("*"))  # refused uploads leave no file


def test_concurrent_uploads_beyond_the_queue_get_429_and_nothing_is_lost(tiny_export, tmp_path):
    client, pool = _client(tiny_export, tmp_path, workers=0, queue_size=3)
    with client:
        statuses, lock = [], threading.Lock()

        def post():
            r = _submit(client, _png_bytes(), FAST)
            with lock:
                statuses.append((r.status_code, r.json()))

        threads = [threading.Thread(target=post) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        accepted = [b["id"] for s, b in statuses if s == 202]
        refused = [b for s, b in statuses if s == 429]
        assert len(accepted) == 3 and len(refused) == 5, statuses
        assert all("queue is full" in b["error"] for b in refused)
        pool.count = 1
        pool.start()  # a worker comes: every accepted job finishes
        for job_id in accepted:
            assert _wait(client, job_id)["state"] == "done"
        assert client.get("/v1/jobs").json()["counts"] == {
            "queued": 0,
            "running": 0,
            "done": 3,
            "failed": 0,
            "cancelled": 0,
        }


def test_old_finished_jobs_are_cleaned_up(tiny_export, tmp_path):
    client, _ = _client(tiny_export, tmp_path, keep_s=0.2)
    with client:
        job_id = _submit(client, _png_bytes(), FAST).json()["id"]
        assert _wait(client, job_id)["state"] == "done"
        assert (tmp_path / "data" / "jobs" / job_id / "result.png").is_file()
        t0 = time.time()
        while client.get(f"/v1/jobs/{job_id}").status_code != 404 and time.time() - t0 < 10:
            time.sleep(0.1)
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
        assert not (tmp_path / "data" / "jobs" / job_id).exists()


def test_cancel_and_time_limit(tiny_export, tmp_path):
    long = {"max_iters": 1000, "stop": "none", "tile": 16}
    client, pool = _client(tiny_export, tmp_path, workers=0)
    with client:
        queued = _submit(client, _png_bytes(), long).json()["id"]
        assert client.delete(f"/v1/jobs/{queued}").json()["state"] == "cancelled"
        assert client.get(f"/v1/jobs/{queued}").json()["state"] == "cancelled"
        assert client.delete(f"/v1/jobs/{queued}").status_code == 409
        running = _submit(client, _png_bytes(), long).json()["id"]
        pool.count = 1
        pool.start()
        _wait(client, running, states=("running",))
        while client.get(f"/v1/jobs/{running}").json().get("iteration", 0) < 2:
            time.sleep(0.02)
        assert client.delete(f"/v1/jobs/{running}").status_code == 202
        job = _wait(client, running)
        assert job["state"] == "cancelled" and job["iteration"] > 0
    client, _ = _client(tiny_export, tmp_path / "t", job_timeout=0.5)
    with client:
        job = _wait(client, _submit(client, _png_bytes(), long).json()["id"])
        assert job["state"] == "failed" and "time limit of 0.5 s" in job["error"]


def test_a_job_may_not_ask_for_unbounded_work(tiny_export, tmp_path):
    client, _ = _client(tiny_export, tmp_path, workers=0, limits=Limits(max_iters=50, max_restarts=2))
    with client:
        for options, why in (
            ({"max_iters": 1e12}, "max_iters 1000000000000 is over this server's limit of 50"),
            ({"max_iters": 51}, "max_iters 51 is over this server's limit of 50"),
            ({"restarts": 3, "max_iters": 5}, "restarts 3 is over this server's limit of 2"),
        ):
            r = _submit(client, _png_bytes(), options)
            assert r.status_code == 400 and r.json() == {"error": f"options: {why}"}
        assert _submit(client, _png_bytes(), {"max_iters": 50, "restarts": 2}).status_code == 202
        assert client.get("/v1/jobs").json()["counts"]["queued"] == 1


def test_diip_serve_bounds_jobs_by_default():
    """A server started with no flags has a job time limit and an iteration limit."""
    from diip_deploy.serve.cli import main

    params = {p.name: p.default for p in main.params}
    assert 0 < params["job_timeout"] and params["job_max_iters"] == Limits.max_iters < 10**4


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LIVE = []  # servers started by a test, killed at its end whatever happened


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test():
    yield
    while LIVE:
        proc = LIVE.pop().proc
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


class Server:
    """A real ``diip-serve`` process on 127.0.0.1."""

    def __init__(self, model, data, *extra):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(data.parent / f"server-{self.port}.log", "w")
        cmd = [
            sys.executable,
            "-m",
            "diip_deploy.serve.cli",
            "--model",
            str(model),
            "--data",
            str(data),
            "--port",
            str(self.port),
            "--threads",
            "1",
            "--backend",
            "ort-cpu",
            *extra,
        ]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        LIVE.append(self)
        t0 = time.time()
        while time.time() - t0 < 60:
            try:
                if json.loads(self.get("/healthz"))["ok"]:
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("diip-serve did not come up: " + Path(self.log.name).read_text())

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return r.read()

    def job(self, job_id):
        return json.loads(self.get(f"/v1/jobs/{job_id}"))

    def submit(self, data, options):
        boundary = "diipboundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="options"\r\n\r\n{json.dumps(options)}\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        req = urllib.request.Request(
            self.url + "/v1/jobs",
            data=body,
            method="POST",
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())["id"]

    def wait(self, job_id, states, timeout=120):
        t0 = time.time()
        while time.time() - t0 < timeout:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            time.sleep(0.1)
        raise AssertionError(f"{job_id}: still {job['state']}")

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self.log.close()
        return code


def _chunked_upload(port, total, chunk=64 * 1024):
    """POST a multipart body of ``total`` bytes in chunked encoding (no Content-Length), as
    a raw socket client; returns (bytes sent before the server answered or closed, answer)."""
    boundary = "b0undary"
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    ).encode()
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        payload = part + b"\0" * (chunk - len(part))
        try:
            while sent < total:
                sock.sendall(b"%x\r\n" % len(payload) + payload + b"\r\n")
                sent += len(payload)
                payload = b"\0" * chunk
                sock.setblocking(False)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break  # the server has answered
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection on a body it will not read
        sock.settimeout(30)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return sent, answer.decode("latin-1")


def test_a_chunked_upload_over_the_limit_is_refused_as_it_streams(tiny_export, tmp_path):
    """No Content-Length: the server counts the body as it arrives and answers 413 once past
    the limit, instead of reading and spooling 300 MB first."""
    server = Server(tiny_export, tmp_path / "data", "--max-upload-mb", "1")
    sent, answer = _chunked_upload(server.port, 300 * 2**20)
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert "over the limit of" in answer and sent < 64 * 2**20, (sent, answer[-200:])
    assert (
        json.loads(server.get("/v1/jobs"))["counts"] == {}
        or sum(json.loads(server.get("/v1/jobs"))["counts"].values()) == 0
    )
    small = server.submit(_png_bytes(), {"max_iters": 2, "tile": 16})  # and the server still serves
    assert server.wait(small, ("done", "failed"))["state"] == "done"
    server.stop()


def test_a_killed_server_restarts_its_job_and_sigterm_puts_it_back_in_the_queue(tiny_export, tmp_path):
    data_dir = tmp_path / "data"
    options = {"max_iters": 400, "stop": "none", "tile": 16}
    server = Server(tiny_export, data_dir)
    job_id = server.submit(_png_bytes(32, 32), options)
    server.wait(job_id, ("running",))
    while server.job(job_id).get("iteration", 0) < 3:
        time.sleep(0.05)
    server.stop(signal.SIGKILL)  # no goodbye: the database still says running
    assert JobStore(data_dir).get(job_id).state == "running"
    server = Server(tiny_export, data_dir)
    job = server.wait(job_id, ("running", "done"))
    assert job["state"] in ("running", "done")
    while server.job(job_id).get("iteration", 0) < 3 and server.job(job_id)["state"] == "running":
        time.sleep(0.05)
    # graceful: uvicorn finishes its shutdown (the running job goes back to the queue), then
    # lets the signal end the process as it would have
    assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    store = JobStore(data_dir)
    assert store.get(job_id).state in ("queued", "done") and store.get(job_id).attempts == 2
    if store.get(job_id).state == "queued":
        assert '"state": "queued"' in Path(server.log.name).read_text()
    server = Server(tiny_export, data_dir)
    job = server.wait(job_id, ("done", "failed"))
    assert job["state"] == "done" and job["report"]["stop_iteration"] == 399
    png = server.get(f"/v1/jobs/{job_id}/result.png")
    server.stop()
    assert png == _diip_run_png(tiny_export, tmp_path, _png_bytes(32, 32), options)


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)
    driver = next((p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if Path(p).exists()), None)
    if binary is None or driver is None:
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_the_page_in_a_real_browser(tiny_export, tmp_path):
    pytest.importorskip("selenium", reason="needs selenium (pip install '.[test]')")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = save(tmp_path / "photo.png", np.clip(smooth_image(64, 64, 4) + 0.05, 0, 1))
    options = {"max_iters": 300, "stop": "none"}
    if os.environ.get("DIIP_SCREENSHOT"):  # README's picture: the shipped model on a noisy example photo
        tiny_export = REPO / "models" / "default-export"
        photo = save(tmp_path / "photo.png", np.asarray(Image.open(REPO / "examples" / "chelsea_noise25.png")) / 255.0)
    server = Server(tiny_export, tmp_path / "data", "--preview-every", "0.05")
    browser = _browser()
    try:
        browser.get(server.url + "/")
        browser.find_element(By.ID, "file").send_keys(str(photo))
        browser.find_element(By.ID, "options").send_keys(json.dumps(options))
        browser.find_element(By.ID, "go").click()
        seen = set()

        def preview_changed(b):
            src = b.find_element(By.ID, "after").get_attribute("src") or ""
            if "preview.png" in src:
                seen.add(src)
            return len(seen) >= 2 or "result.png" in src

        WebDriverWait(browser, 60, poll_frequency=0.02).until(preview_changed)
        link = browser.find_element(By.ID, "download")
        WebDriverWait(browser, 120).until(lambda b: "off" not in link.get_attribute("class"))
        status = browser.find_element(By.ID, "status").text
        assert "done" in status and f"stopped at {options['max_iters'] - 1}" in status, status
        assert len(seen) >= 2  # the live preview changed before the result came
        shot = os.environ.get("DIIP_SCREENSHOT")
        browser.save_screenshot(shot or str(tmp_path / "page.png"))
        with urllib.request.urlopen(link.get_attribute("href"), timeout=10) as r:
            downloaded = r.read()
        browser.set_window_size(390, 844)  # a phone's screen: the page still lays out
        assert browser.find_element(By.ID, "go").is_displayed()
    finally:
        browser.quit()
        server.stop()
    assert downloaded == _diip_run_png(tiny_export, tmp_path, photo.read_bytes(), options)


def test_ray_actors_run_the_jobs(tiny_export, tmp_path):
    """--ray: a local cluster's actors restore the jobs and write the same bytes."""
    pytest.importorskip("ray", reason="needs Ray (pip install '.[ray]')")
    options = {"max_iters": 4, "tile": 16, "lr": 0.05}
    server = Server(tiny_export, tmp_path / "data", "--ray", "--workers", "1")
    try:
        job_id = server.submit(_png_bytes(24, 20), options)
        job = server.wait(job_id, ("done", "failed"), timeout=180)
        assert job["state"] == "done", job
        png = server.get(f"/v1/jobs/{job_id}/result.png")
    finally:
        server.stop()
    assert png == _diip_run_png(tiny_export, tmp_path, _png_bytes(24, 20), options)


def test_the_service_imports_no_torch():
    from test_no_torch import BLOCK_TORCH

    code = BLOCK_TORCH + "import diip_deploy.serve.app, diip_deploy.serve.cli, diip_deploy.serve.workers\nprint('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok" and "TORCH IMPORT" not in r.stderr, r.stderr
