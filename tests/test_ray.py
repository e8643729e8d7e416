"""diip-run --ray on a local Ray cluster started once for the whole test run (2 CPUs)."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from images import save, smooth_image

from diip_deploy.runtime.commands.cli import main as diip_run

ray = pytest.importorskip("ray", reason="Ray not installed (pip install '.[ray]')")

OPTS = ["--tile", "16", "--max-iters", "6", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def run(args):
    return CliRunner().invoke(diip_run, [str(a) for a in args], catch_exceptions=False)


def _photos(folder, n):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.clip(smooth_image(24 + 8 * (i % 2), 32, i) + rng.normal(0, 0.08, (24 + 8 * (i % 2), 32, 3)), 0, 1)
        save(folder / f"p{i}.png", img)
    return folder


def test_ray_outputs_equal_the_plain_run_byte_for_byte(tiny_export, tmp_path, cluster):
    photos = _photos(tmp_path / "in", 5)
    plain, distributed = tmp_path / "plain", tmp_path / "ray"
    assert run([photos, "--model", tiny_export, "--out", plain, *OPTS]).exit_code == 0
    r = run([photos, "--model", tiny_export, "--out", distributed, *OPTS, "--ray", "--ray-workers", "2"])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in plain.iterdir())
    assert names == sorted(p.name for p in distributed.iterdir()) and len(names) == 10
    for n in names:
        assert (plain / n).read_bytes() == (distributed / n).read_bytes(), n


def test_ray_bad_input_fails_alone(tiny_export, tmp_path, cluster):
    photos = _photos(tmp_path / "in", 4)
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 20)
    out = tmp_path / "o"
    r = run(["--ray", photos, "--model", tiny_export, "--out", out, *OPTS[:-1]])  # --ray takes no value
    assert r.exit_code == 1
    errors = [line for line in r.output.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "broken.png" in errors[0]
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".png") == [f"p{i}.png" for i in range(4)]
    assert "4/5 images" in r.output or "5/5 images" in r.output  # progress is counted over all workers


def test_ray_resume_redoes_nothing_finished(tiny_export, tmp_path, cluster):
    photos = _photos(tmp_path / "in", 5)
    out = tmp_path / "o"
    # a run killed after two images: their pairs are complete, the rest never started
    assert run([photos / "p0.png", photos / "p1.png", "--model", tiny_export, "--out", out, *OPTS]).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    r = run([photos, "--model", tiny_export, "--out", out, *OPTS[:-1], "--ray", "--skip-existing"])
    assert r.exit_code == 0, r.output
    assert r.output.count("is complete, skipped") == 2
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in before.items())
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".json") == [f"p{i}.json" for i in range(5)]
    assert all(json.loads((out / f"p{i}.json").read_text())["complete"] for i in range(5))


def test_ray_missing_is_one_line(tiny_export, tmp_path, monkeypatch):
    """Where Ray cannot be imported, --ray says how to install it, once, and fails the batch."""
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    photos = _photos(tmp_path / "in", 1)
    r = run([photos, "--model", tiny_export, "--out", tmp_path / "o", *OPTS, "--ray"])
    assert r.exit_code == 1 and "pip install" in r.output
    assert len([line for line in r.output.splitlines() if ": error:" in line]) == 1


def _big_photo(folder, name="big.png"):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    img = np.clip(smooth_image(56, 72, 7) + rng.normal(0, 0.08, (56, 72, 3)), 0, 1)
    save(folder / name, img)
    return folder / name


# at --tile 16 and --region-tiles 9 (blocks of 3x3 tiles) the 56x72 photo (5x6 tiles) is 4 units, the
# small ones (2x3, 3x3 tiles) one each
SPLIT = ["--region-tiles", "9"]


@pytest.mark.parametrize("scope", ["image", "tile"])
def test_ray_splits_one_big_photo_and_matches_the_plain_run(tiny_export, tmp_path, cluster, scope):
    photos = tmp_path / "in"
    _big_photo(photos)
    _photos(tmp_path / "small", 1)
    (tmp_path / "small" / "p0.png").rename(photos / "p0.png")  # a one-unit photo beside it: a file task
    opts = [*OPTS[:-1], *SPLIT, "--stop-scope", scope]  # not quiet: the unit progress is checked
    plain, distributed = tmp_path / "plain", tmp_path / "ray"
    assert run([photos, "--model", tiny_export, "--out", plain, *opts, "--quiet"]).exit_code == 0
    r = run([photos, "--model", tiny_export, "--out", distributed, *opts, "--ray", "--ray-workers", "2"])
    assert r.exit_code == 0, r.output
    units = [line for line in r.output.splitlines() if "big.png:" in line and "tile units" in line]
    assert len(units) >= 2, r.output  # the big photo went out in several units
    names = sorted(p.name for p in plain.iterdir())
    assert names == sorted(p.name for p in distributed.iterdir()) == ["big.json", "big.png", "p0.json", "p0.png"]
    for n in names:
        assert (plain / n).read_bytes() == (distributed / n).read_bytes(), n
    total = int(re.search(r"(\d+)/(\d+) tile units", units[-1]).group(2))
    assert len(units) == total and total == 4


def _dying_worker(deaths, where, times):
    """A worker class whose process kills itself (os._exit) when handed the named work
    ("file-<name>" or "unit-<first tile>"), ``times`` times each; marker files count the
    deaths, since a restarted actor remembers nothing.  Defined in here so that Ray ships
    it by value to its workers, which cannot import this test module."""
    import os

    from diip_deploy.runtime.commands.ray_runner import _Worker

    def maybe_die(what):
        if what in where and len(list(deaths.glob(f"{what}.*"))) < times:
            (deaths / f"{what}.{os.getpid()}").write_text("")
            os._exit(1)

    class Dying(_Worker):
        def run(self, job, save_plots):
            maybe_die(f"file-{os.path.basename(str(job.source))}")
            return _Worker.run(self, job, save_plots)

        def unit(self, key, img, seed, k):
            maybe_die(f"unit-{k}")
            return _Worker.unit(self, key, img, seed, k)

    return Dying


def _run_direct(tiny_export, photos, out, worker_class):
    from diip_deploy.runtime.commands.ray_runner import RunOn, run_jobs
    from diip_deploy.runtime.images.outputs import expand_inputs, plan_outputs

    found, errors = expand_inputs([photos])
    jobs, _ = plan_outputs(found, out)
    out.mkdir()
    assert not errors
    on = RunOn(str(tiny_export), "ort-cpu", 1, {"tile": 16, "region_tiles": 9, "max_iters": 6})
    return run_jobs(jobs, on, None, 2, worker_class=worker_class)


def test_ray_worker_that_dies_is_restarted_and_its_work_retried(tiny_export, tmp_path, cluster):
    """Real process deaths: a worker dies on a file and on the first unit of a split photo;
    Ray restarts it and retries the task, and the outputs are the plain run's, with nothing
    left under any other name."""
    photos = _photos(tmp_path / "in", 2)
    _big_photo(photos)
    plain, distributed, deaths = tmp_path / "plain", tmp_path / "ray", tmp_path / "deaths"
    deaths.mkdir()
    assert run([photos, "--model", tiny_export, "--out", plain, *OPTS, *SPLIT]).exit_code == 0
    results = _run_direct(tiny_export, photos, distributed, _dying_worker(deaths, ["file-p0.png", "unit-0"], 1))
    assert len(results) == 3 and all(r["ok"] for r in results), results
    assert len(list(deaths.iterdir())) == 2
    names = sorted(p.name for p in plain.iterdir())
    assert names == sorted(p.name for p in distributed.iterdir())  # no temp or lock file left behind
    for n in names:
        assert (plain / n).read_bytes() == (distributed / n).read_bytes(), n


def test_ray_work_that_keeps_killing_workers_fails_alone(tiny_export, tmp_path, cluster):
    """A photo that kills its worker every time fails with one line once Ray's restarts are
    spent; a fresh worker takes over and the other photos are written."""
    from diip_deploy.runtime.commands.ray_runner import MAX_RESTARTS

    photos = _photos(tmp_path / "in", 3)
    deaths = tmp_path / "deaths"
    deaths.mkdir()
    results = _run_direct(tiny_export, photos, tmp_path / "o", _dying_worker(deaths, ["file-p0.png"], 99))
    by_source = {r["source"].rsplit("/", 1)[-1]: r for r in results}
    assert not by_source["p0.png"]["ok"] and "restarts" in by_source["p0.png"]["error"]
    assert "\n" not in by_source["p0.png"]["error"]
    assert by_source["p1.png"]["ok"] and by_source["p2.png"]["ok"]
    assert len(list(deaths.iterdir())) == MAX_RESTARTS + 1
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["p1.json", "p1.png", "p2.json", "p2.png"]
