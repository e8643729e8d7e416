"""diip-run --ray on a local Ray cluster started once for the whole test run (2 CPUs)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from diip_deploy.runtime.cli import main as diip_run
from images import save, smooth_image

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
    r = run([photos, "--model", tiny_export, "--out", out, *OPTS[:-1], "--ray"])
    assert r.exit_code == 1
    errors = [l for l in r.output.splitlines() if ": error:" in l]
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
    assert len([l for l in r.output.splitlines() if ": error:" in l]) == 1
