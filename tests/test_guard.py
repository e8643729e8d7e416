"""The residual guard: a pure measure of how structured the removed part is, and the
Restorer returning the input where it is too structured."""

import json

import numpy as np
from click.testing import CliRunner
from images import save, smooth_image

from diip_deploy.runtime.commands.cli import main as diip_run
from diip_deploy.runtime.optimise.guard import keeps_restoration, residual_correlation


def test_white_residual_is_uncorrelated_and_smooth_one_is_not():
    rng = np.random.default_rng(0)
    img = rng.random((3, 64, 64))
    white = img + rng.normal(0, 0.1, img.shape)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    smooth = img + 0.1 * np.sin(2 * np.pi * xx)[None] * np.cos(np.pi * yy)[None]
    assert abs(residual_correlation(white, img)) < 0.05
    assert residual_correlation(smooth, img) > 0.9
    assert residual_correlation(img, img) == 0.0
    assert residual_correlation(img + 0.3, img) == 0.0  # a constant shift is not structure
    white_corr, smooth_corr = residual_correlation(white, img), residual_correlation(smooth, img)
    assert keeps_restoration(white_corr, 0.5) and not keeps_restoration(smooth_corr, 0.5)
    assert keeps_restoration(smooth_corr, 1.0)  # 1: the guard is off


def test_restorer_guard_keeps_the_input_where_the_residual_is_structured(tiny_export):
    from diip_deploy.runtime.restorer import Restorer

    rng = np.random.default_rng(1)
    img = smooth_image(16, 28, 2).astype(np.float32)  # two tiles of 16, overlap 4
    with Restorer(tiny_export, "ort-cpu", tile=16, tile_overlap=4, stop_scope="tile", residual_guard=0.5) as r:
        layout = r.layout(img, 0)
        tiles = layout.tiles
        assert len(layout.plan) == 2
        yy, xx = np.mgrid[0:16, 0:16] / 16.0
        parts = [
            tiles[0] + rng.normal(0, 0.1, tiles[0].shape).astype(np.float32),  # noise removed: kept
            tiles[1] + 0.2 * np.sin(np.pi * xx)[None].astype(np.float32),
        ]  # structure: the input instead
        noisy_part = parts[0]
        corrs, reverted = r.guard(layout, [0, 1], parts, [([0], parts[0]), ([1], parts[1])])
    assert reverted == 1 and corrs[0] < 0.1 and corrs[1] > 0.8
    assert parts[0] is noisy_part and np.array_equal(parts[1], tiles[1])


def test_guard_in_the_report_and_off_by_default(tiny_export, tmp_path):
    png = save(tmp_path / "a.png", smooth_image(16, 16, 3))
    reports = {}
    for name, extra in (("off", []), ("on", ["--residual-guard", "0"])):
        out = tmp_path / name
        r = CliRunner().invoke(
            diip_run,
            [
                str(png),
                "--model",
                str(tiny_export),
                "--out",
                str(out),
                "--tile",
                "16",
                "--max-iters",
                "2",
                "--stop",
                "none",
                *extra,
            ],
        )
        assert r.exit_code == 0, r.output
        reports[name] = (json.loads((out / "a.json").read_text()), r.output)
    assert "guard" not in reports["off"][0] and reports["off"][0]["settings"]["residual_guard"] == 1.0
    g = reports["on"][0]["guard"]
    assert g["judged"] == 1 and g["max_correlation"] == 0.0
    # two iterations from noise leave a smooth, image-sized residual: the input comes back
    assert g["correlation"] > 0 and g["reverted_to_input"] == 1
    from PIL import Image

    restored = np.asarray(Image.open(tmp_path / "on" / "a.png"), dtype=int)
    assert np.abs(restored - np.asarray(Image.open(png), dtype=int)).max() <= 1
    assert "kept the input for 1 of 1 regions" in reports["on"][1]


def test_replay_follows_the_loop_order():
    """The early guard asks only while no stop has been detected; else the stop's result is judged."""
    from diip_deploy.runtime.optimise.guard import replay

    corr = [0.9] * 10 + [0.2] * 10  # structured early, white later
    assert replay(corr, 19, 19, 0.5, guard_at=5) == (4, False, 5)  # early guard ends the run
    assert replay(corr, 3, 4, 0.5, guard_at=5) == (3, False, 5)  # stop detected first, then judged
    assert replay(corr, 15, 16, 0.5, guard_at=0) == (15, True, 17)  # no early question
    assert replay(corr, 15, 16, 1.0, guard_at=5) == (15, True, 17)  # guard off


def test_replay_from_recorded_correlations_is_what_the_restorer_did(tiny_export):
    """Correlations recorded on an unguarded run, replayed, give the guarded run's stop,
    verdict and iterations: what lets diip-tune score what diip-run returns."""
    from diip_deploy.runtime.optimise.guard import replay
    from diip_deploy.runtime.restorer import Restorer

    img = (smooth_image(16, 16, 3) + np.random.default_rng(2).normal(0, 0.08, (16, 16, 3))).clip(0, 1)
    common = dict(tile=16, stop="none", max_iters=6)
    with Restorer(tiny_export, "ort-cpu", residual_guard=1.0, **common) as r:
        layout = r.layout(img.astype(np.float32), 0)
        corrs = []
        r.restore_unit(layout, 0, lambda info: corrs.append(residual_correlation(info["image"][0], layout.tiles[0])))
    assert len(corrs) == 6
    for guard, guard_at in ((0.0, 3), (0.0, 0), (0.999, 3)):
        with Restorer(tiny_export, "ort-cpu", residual_guard=guard, guard_at=guard_at, **common) as r:
            got = r.restore_unit(r.layout(img.astype(np.float32), 0), 0)
        judged, kept, run = replay(corrs, 5, 5, guard, guard_at, 6)
        assert (got.stops[0], got.reverted == 0, got.iterations_run) == (judged, kept, run), (guard, guard_at)
    assert replay(corrs, 5, 5, 0.0, 3, 6) == (2, False, 3)  # the early guard did fire in that run


def test_guard_replay_bench_hands_back_a_crop_exactly_where_its_correlation_passes_the_threshold(tmp_path):
    """bench/guard_replay.py on two made-up recorded runs under the shipped defaults (cap
    25): a noise-like run (correlation 0.05 throughout) is kept at every threshold; a
    structured one (0.45 to evaluation 10, 0.3 to 14, then 0.1) is handed back where the
    early guard's evaluation sees it over the threshold, and otherwise kept to the cap."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    n = 25
    loss = list(np.linspace(1.0, 0.5, n))  # still falling at the cap: no stop before it
    run = {"loss": loss, "laplacian_var": [1.0] * n, "psnr": [20.0 + 0.1 * i for i in range(n)]}
    noisy = dict(run, task="noise25", crop="a", input_psnr=20.0, correlation=[0.05] * n)
    structured = dict(
        run, task="jpeg10", crop="b", input_psnr=25.0, correlation=[0.45] * 10 + [0.3] * 4 + [0.1] * (n - 14)
    )
    hist = tmp_path / "h.json"
    hist.write_text(json.dumps({"samples": [noisy, structured]}))
    out = tmp_path / "r.json"
    p = subprocess.run(
        [sys.executable, str(repo / "bench" / "guard_replay.py"), "--histories", str(hist), "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=repo,
    )
    assert p.returncode == 0, p.stderr
    rows = {(r["guard_at"], r["residual_guard"]): r["training"] for r in json.loads(out.read_text())["rows"]}
    for (at, th), row in rows.items():
        assert row["noise25"]["handed_back"] == 0 and row["noise25"]["returned"] == 22.4
        back = (at == 10 and th < 0.45) or (at == 14 and th < 0.3)
        assert row["jpeg10"]["handed_back"] == int(back), (at, th)
        assert row["jpeg10"]["returned"] == (25.0 if back else 22.4)
        assert row["jpeg10"]["mean_cost"] == (at if back else 25)
    assert json.loads(out.read_text())["top_correlation_at"]["14"]["training"] == {"jpeg10": 0.3, "noise25": 0.05}


def test_guard_replay_write_records_the_exports_own_guard_row_for_its_weights(tiny_export, tmp_path):
    """--write puts the export's own guard row beside the guard off into its manifest,
    marked with its weights and chain; histories recorded on another chain are refused."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["defaults"].update(residual_guard=0.5, guard_at=14, max_iters=25)  # the shipped guard and cap
    (export / "manifest.json").write_text(json.dumps(manifest))
    chain = manifest["chain"]["timesteps"]
    n = 25
    run = {
        "loss": list(np.linspace(1.0, 0.5, n)),
        "laplacian_var": [1.0] * n,
        "psnr": [20.0 + 0.1 * i for i in range(n)],
    }
    sample = dict(run, task="jpeg10", crop="b", input_psnr=25.0, correlation=[0.99] * n)
    hist = tmp_path / "h.json"
    hist.write_text(json.dumps({"settings": {"timesteps": chain}, "samples": [sample]}))
    cmd = [sys.executable, str(repo / "bench" / "guard_replay.py"), "--export", str(export), "--write"]
    p = subprocess.run(cmd + ["--histories", str(hist)], capture_output=True, text=True, cwd=repo)
    assert p.returncode == 0, p.stderr
    record = json.loads((export / "manifest.json").read_text())["validation"]["residual_guard_replay"]
    assert record["weights_sha256"] == manifest["model"]["weights_sha256"] and record["chain_timesteps"] == chain
    assert (record["residual_guard"], record["guard_at"]) == (0.5, 14)
    assert record["training_without"]["jpeg10"]["handed_back"] == 0  # the guard off keeps everything
    assert record["training"]["jpeg10"]["handed_back"] == 1 and record["training"]["jpeg10"]["mean_cost"] == 14
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"settings": {"timesteps": [999] + chain[1:]}, "samples": [sample]}))
    p = subprocess.run(cmd + ["--histories", str(other)], capture_output=True, text=True, cwd=repo)
    assert p.returncode != 0 and "another chain" in p.stderr
