"""Restorer and diip-run's tiling: tiles, batches, stop scopes, size guards, reports."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from images import save, smooth_image

from diip_deploy.runtime.commands.cli import main as diip_run
from diip_deploy.runtime.restorer import Restorer


def run(args):
    return CliRunner().invoke(diip_run, [str(a) for a in args], catch_exceptions=False)


def _noisy(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(smooth_image(h, w, seed) + rng.normal(0, 0.1, (h, w, 3)), 0, 1).astype(np.float32)


@pytest.mark.parametrize("scope", ["image", "tile"])
def test_one_tile_image_equals_whole_image_restore(tiny_export, scope):
    img = _noisy(16, 16)
    with (
        Restorer(tiny_export, "ort-cpu", tile=16, stop_scope=scope, max_iters=6) as tiled,
        Restorer(tiny_export, "ort-cpu", tile=0, stop_scope=scope, max_iters=6) as whole,
    ):
        a, ra = tiled.restore_array(img)
        b, rb = whole.restore_array(img)
    assert ra["tiling"]["tiles"] == rb["tiling"]["tiles"] == 1
    np.testing.assert_array_equal(a, b)
    assert ra["history"] == rb["history"]


def test_tiles_cover_the_image_and_report_says_how(tiny_export):
    img = _noisy(40, 50)
    with Restorer(tiny_export, "ort-cpu", tile=16, tile_overlap=4, batch=3, max_iters=4) as r:
        out, rep = r.restore_array(img)
    assert out.shape == img.shape and np.isfinite(out).all()
    t = rep["tiling"]
    assert t["tile"] == [16, 16] and t["overlap"] == 4 and t["batch"] == 3 and t["stop_scope"] == "image"
    assert t["tiles"] == 3 * 4 and rep["iterations_run"] == 4 * 12
    assert rep["run"]["peak_rss_mb"] > 0 and "device_memory_mb" not in rep["run"]  # ORT CPU cannot say


@pytest.mark.parametrize("scope", ["image", "tile"])
def test_outputs_identical_for_batch_1_and_5(tiny_export, tmp_path, scope):
    png = save(tmp_path / "a.png", _noisy(40, 44, seed=3))
    outs = []
    for b in (1, 5):
        out = tmp_path / f"o{b}"
        r = run(
            [
                png,
                "--model",
                tiny_export,
                "--out",
                out,
                "--tile",
                16,
                "--batch",
                b,
                "--stop-scope",
                scope,
                "--max-iters",
                10,
                "--stop",
                "slope",
                "--eps",
                1e-2,
                "--slope-window",
                1,
                "--quiet",
            ]
        )
        assert r.exit_code == 0, r.output
        outs.append(out)
    assert (outs[0] / "a.png").read_bytes() == (outs[1] / "a.png").read_bytes()
    reps = [json.loads((o / "a.json").read_text()) for o in outs]
    for rep in reps:
        rep.pop("output"), rep["tiling"].pop("batch")
    assert reps[0] == reps[1]
    if scope == "tile":  # tiles stopped at different iterations, and the result still did not depend on the batch
        assert reps[0]["tiling"]["stop_iterations"]["min"] < reps[0]["tiling"]["stop_iterations"]["max"]


def test_image_over_max_pixels_refused_before_any_graph_runs(tiny_export, tmp_path):
    """The model's graph would fail with a NaN error if it ran; the size error comes first."""
    from test_cli import _nan_model

    m = _nan_model(tiny_export, tmp_path / "m")
    big = save(tmp_path / "big.png", smooth_image(60, 70))
    r = run([big, "--model", m, "--out", tmp_path / "o", "--max-pixels", 4000, "--quiet"])
    assert r.exit_code == 1
    assert "over --max-pixels 4000" in r.output and "non-finite" not in r.output
    assert not any((tmp_path / "o").iterdir())


def test_whole_image_only_where_it_fits(tiny_export, tmp_path):
    big = save(tmp_path / "big.png", smooth_image(280, 280))
    r = run([big, "--model", tiny_export, "--out", tmp_path / "o", "--tile", 0, "--quiet"])
    assert r.exit_code == 1 and "too large to restore whole" in r.output


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--tile", 15], "multiple"),
        (["--tile", 16, "--tile-overlap", 9], "overlap"),
        (["--batch", 0], "batch"),
        (["--tile", 1024], "largest tile"),
    ],
)
def test_bad_tile_options_refused(tiny_export, tmp_path, args, msg):
    png = save(tmp_path / "a.png", smooth_image(16, 16))
    r = run([png, "--model", tiny_export, "--out", tmp_path / "o", *args])
    assert r.exit_code == 2 and msg in r.output
    assert len([line for line in r.output.splitlines() if line.strip()]) == 1


def test_progress_shows_tiles_iterations_and_eta(tiny_export, tmp_path):
    png = save(tmp_path / "a.png", _noisy(40, 40))
    r = run(
        [
            png,
            "--model",
            tiny_export,
            "--out",
            tmp_path / "o",
            "--tile",
            16,
            "--batch",
            2,
            "--stop-scope",
            "tile",
            "--max-iters",
            4,
            "--steps-per-report",
            1,
        ]
    )
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if "tiles " in line]
    assert lines and "iteration=" in lines[-1] and "loss=" in lines[-1]
    assert any("ETA" in line for line in lines) and any("tiles 9/9" in line or "/9" in line for line in lines)
    r = run(
        [png, "--model", tiny_export, "--out", tmp_path / "o2", "--tile", 16, "--max-iters", 3, "--steps-per-report", 1]
    )
    assert "(9 tiles): iteration 2/3" in r.output
    assert "iteration 1/3" in r.output and "ETA at most" in r.output  # one region: iterations, with an ETA


def test_regions_bound_the_joint_stop_and_do_not_depend_on_batch(tiny_export):
    img = _noisy(52, 52, seed=4)  # 4 x 4 tiles of 16 with overlap 4 -> 4 regions of 2 x 2
    outs = []
    for batch in (1, 3):
        with Restorer(
            tiny_export,
            "ort-cpu",
            tile=16,
            tile_overlap=4,
            batch=batch,
            region_tiles=4,
            max_iters=10,
            stop="slope",
            eps=1e-2,
            slope_window=1,
        ) as r:
            outs.append(r.restore_array(img))
    (a, ra), (b, rb) = outs
    np.testing.assert_array_equal(a, b)
    assert ra["tiling"]["stops"] == 4 and ra["stop_reason"].startswith("per region")
    assert ra["tiling"]["stop_iterations"] == rb["tiling"]["stop_iterations"]


def test_restart_helpers():
    from diip_deploy.runtime.optimise.restarts import mean_restarts, restart_seed

    assert restart_seed((3, 16, 0), 0) == (3, 16, 0) and restart_seed((3, 16, 0), 2) == (3, 16, 0, 2)
    assert restart_seed(5, 1) == (5, 1)
    a, b, c, d = (np.full((3, 2, 2), v, np.float32) for v in (0.0, 1.0, 0.5, -0.5))
    means = mean_restarts([a, b, c, d], 2, 2)  # tiles (a, b) then their second restarts (c, d)
    np.testing.assert_allclose(means[0], 0.25)
    np.testing.assert_allclose(means[1], 0.25)
    assert mean_restarts([a, b], 1, 2)[1] is b  # one restart: the parts as they are


@pytest.mark.parametrize("scope", ["image", "tile"])
def test_restarts_average_runs_from_their_own_seeds(tiny_export, scope):
    """--restarts 2 on one tile with a fixed iteration count is the mean of two plain runs
    of that tile, from the tile's seed and from its restart seed, run in one batch."""
    from diip_deploy.runtime.optimise.loop import restore

    img = _noisy(16, 16, seed=4)
    with Restorer(tiny_export, "ort-cpu", tile=16, stop_scope=scope, max_iters=5, stop="none", restarts=2) as r:
        out, rep = r.restore_array(img)
        y = (img.transpose(2, 0, 1)[None] * 2 - 1).astype(np.float32)
        runs = [restore(r.chain, y, r.settings, [s])[0].x0 for s in [(0, 0, 0), (0, 0, 0, 1)]]
    expected = np.clip((np.mean(runs, axis=0).transpose(1, 2, 0) + 1) / 2, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.abs(runs[0] - runs[1]).max() > 1e-3  # the two seeds really differ
    assert rep["settings"]["restarts"] == 2 and rep["iterations_run"] == 2 * 5


def test_restarts_come_from_the_manifest_unless_overridden(tiny_export, tmp_path):
    import shutil

    from diip_deploy.manifest import MANIFEST_NAME

    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    data = json.loads((export / MANIFEST_NAME).read_text())
    data["defaults"]["restarts"] = 3
    (export / MANIFEST_NAME).write_text(json.dumps(data))
    png = save(tmp_path / "a.png", _noisy(16, 16))
    for extra, k in (([], 3), (["--restarts", 1], 1)):
        out = tmp_path / f"o{k}"
        r = run(
            [png, "--model", export, "--out", out, "--tile", 16, "--max-iters", 3, "--stop", "none", "--quiet", *extra]
        )
        assert r.exit_code == 0, r.output
        rep = json.loads((out / "a.json").read_text())
        assert rep["settings"]["restarts"] == k and rep["iterations_run"] == 3 * k
    data["defaults"]["restarts"] = 0
    (export / MANIFEST_NAME).write_text(json.dumps(data))
    r = run([png, "--model", export, "--out", tmp_path / "bad", "--quiet"])
    assert r.exit_code == 2 and "restarts" in r.output


def test_default_batch_follows_the_backend_and_tile(tiny_export):
    """Without --batch: 8 tiles a call on the CPU (and TensorRT engines, built for up to
    16); on ONNX Runtime's GPU providers 512x512 pixels a call, at least one tile.  The
    report records the batch the tiles ran with."""
    from diip_deploy.runtime.backends.select import default_batch

    assert [default_batch("ort-cuda", t) for t in (64, 128, 256, 1024)] == [64, 16, 4, 1]
    assert default_batch("ort-tensorrt", 32) == 64 and default_batch("tensorrt", 64) == 8
    assert default_batch("ort-cpu", 64) == 8 and default_batch("ort-cuda", 0) == 8
    with Restorer(tiny_export, "ort-cpu", tile=16, tile_overlap=4, max_iters=2) as r:
        assert r.settings.batch == 8
        _, report = r.restore_array(_noisy(24, 24))
    assert report["tiling"]["batch"] == 8
