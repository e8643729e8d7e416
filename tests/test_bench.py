"""Benchmark pieces: degradations, metrics, and the bench end to end on a tiny run."""

import json
from pathlib import Path

import numpy as np
import pytest
from images import save, smooth_image

from diip_deploy.bench.degrade import TASKS
from diip_deploy.bench.metrics import haarpsi, lpips_or_none, psnr, ssim


def _photo(seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(smooth_image(64, 64, seed) + 0.05 * rng.standard_normal((64, 64, 3)), 0, 1)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_degradations_are_seeded_and_change_the_image(task):
    x = _photo()
    a, b = TASKS[task](x, seed=3), TASKS[task](x, seed=3)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert psnr(x, a) < 35.0, f"{task} barely changes the image"
    if task in ("noise25", "waterdrop", "deform"):  # randomness that depends on the seed
        assert not np.array_equal(a, TASKS[task](x, seed=4))


def test_metrics_agree_with_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    x = _photo(0)
    y = TASKS["noise25"](x, seed=1)
    assert psnr(x, y) == pytest.approx(peak_signal_noise_ratio(x, y, data_range=1.0), abs=1e-9)
    assert ssim(x, y) == pytest.approx(structural_similarity(x, y, data_range=1.0, channel_axis=2), abs=1e-12)
    assert psnr(x, x) == float("inf")


def test_haarpsi_orders_damage():
    x = _photo(0)
    assert haarpsi(x, x) == pytest.approx(1.0, abs=1e-9)
    mild, strong = TASKS["noise25"](x, seed=1), np.clip(x + np.random.default_rng(2).normal(0, 0.3, x.shape), 0, 1)
    assert 1.0 > haarpsi(x, mild) > haarpsi(x, strong) > 0.0


def test_lpips_is_not_faked_without_weights(monkeypatch, tmp_path):
    """Only meaningful where lpips is installed (it is in no extra): without its backbone
    weights (an empty TORCH_HOME, no network) the score must be None, not made up."""
    pytest.importorskip("lpips", reason="lpips not installed: nothing to guard")
    from diip_deploy.bench.metrics import _lpips_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _lpips_model.cache_clear()
    assert lpips_or_none(_photo(0), _photo(1)) is None


def _bench(tiny_export, tmp_path, n, options):
    """diip-bench on ``n`` small images of 40x40 cut to 32x32, with ``options``."""
    from click.testing import CliRunner

    from diip_deploy.bench.bench_cli import main as bench

    (tmp_path / "imgs").mkdir()
    for i in range(n):
        save(tmp_path / "imgs" / f"im{i}.png", smooth_image(40, 40, seed=i))
    out = tmp_path / "out"
    args = [
        "--export",
        str(tiny_export),
        "--images",
        str(tmp_path / "imgs"),
        "--n",
        str(n),
        "--size",
        "32",
        *options.split(),
        "--out",
        str(out),
    ]
    return CliRunner().invoke(bench, args, catch_exceptions=False), out


def test_bench_end_to_end_on_two_small_images(tiny_export, tmp_path):

    r, out = _bench(tiny_export, tmp_path, 2, "--task noise25 --task sr4 --max-iters 6 --k-min 2 --dip-iters 20")
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "results.json").read_text())
    assert rep["dataset"]["count"] == 2 and set(rep["tasks"]) == {"noise25", "sr4"}
    noise = rep["tasks"]["noise25"]["methods"]
    for m in (
        "DIIP surrogate (auto stop)",
        "DIIP surrogate (oracle stop)",
        "DIIP exact (auto stop)",
        "DIP (oracle stop)",
        "TV",
    ):
        assert m in noise, m
    oracle = noise["DIIP surrogate (oracle stop)"]["per_image"]
    for rule in ("auto", "slope", "laplacian"):
        for name, v in noise[f"DIIP surrogate ({rule} stop)"]["per_image"].items():
            assert v["psnr"] <= oracle[name]["psnr"] + 1e-9  # the oracle is an upper bound
    assert "bicubic" in rep["tasks"]["sr4"]["methods"]
    md = (out / "results.md").read_text()
    assert "| DIIP surrogate (auto stop) |" in md and "noise25 PSNR" in md
    for f in ("curves_noise25.png", "grid_noise25.png", "curves_sr4.png", "grid_sr4.png"):
        assert (out / f).stat().st_size > 1000


def test_degrade_cli(tmp_path):
    from click.testing import CliRunner

    from diip_deploy.bench.degrade import main as degrade

    src = save(tmp_path / "p.png", smooth_image(32, 32))
    r = CliRunner().invoke(degrade, [str(src), "--task", "jpeg10", "--task", "waterdrop", "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "d" / "p_jpeg10.png").exists() and (tmp_path / "d" / "p_waterdrop.png").exists()


def test_gpu_bench_dry_run_times_every_variant_on_the_cpu(tiny_export, tiny_pipeline, tmp_path):
    """bench/gpu.py --dry-run: the GPU benchmark's own code, on ORT's CPU provider, with the
    fp16 copies when the export has them; every variant times without an error."""
    import subprocess
    import sys

    from conftest import copy_export

    from diip_deploy.export.fp16 import add_fp16_graphs

    export = copy_export(tiny_export, tmp_path / "export")
    add_fp16_graphs(export)
    out = tmp_path / "gpu.json"
    repo = Path(__file__).resolve().parents[1]
    ts = tmp_path / "unet.ts"
    r = subprocess.run(
        [sys.executable, "bench/gpu.py", "--save-torch", str(ts), "--model", str(tiny_pipeline)],
        capture_output=True,
        text=True,
        cwd=repo,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(
        [
            sys.executable,
            "bench/gpu.py",
            "--dry-run",
            "--export",
            str(export),
            "--threads",
            "1",
            "--torch",
            str(ts),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=repo,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = [x for x in report["chain"] if "reference" not in x]
    host = [x for x in rows if x.get("loop") != "device"]
    assert {(x["precision"], x["io_binding"]) for x in host} == {
        ("fp32", False),
        ("fp32", True),
        ("fp16", False),
        ("fp16", True),
    }
    assert len([x for x in rows if x.get("loop") == "device"]) == 3  # the device loop at every shape
    assert all("error" not in x and x["s_per_iter"] > 0 for x in rows), rows
    torch_rows = [x for x in report["chain"] if "reference" in x]
    assert len(torch_rows) == 3 and all(x["s_per_iter"] > 0 and x["ort_best_over_torch"] > 0 for x in torch_rows), (
        torch_rows
    )
    assert set(report["photo"]) == {"fp32_host", "fp16_host", "fp32_device"} and report["dry_run"]
    assert "error" not in report["parity"] and report["parity"]["max_diff_of_255"] < 0.5, report["parity"]
    assert [report["photo"][k]["loop"] for k in ("fp32_host", "fp32_device")] == ["host", "device"]


def test_traced_torch_reference_matches_eager_at_other_shapes(tiny_pipeline, tmp_path):
    """The TorchScript side of bench/gpu.py, traced at one size and batch, computes what
    the eager model does at others (the GPU machine runs it without diffusers)."""
    import importlib.util

    import torch

    from diip_deploy.export.loading import load_model
    from diip_deploy.export.reference import EpsModel

    spec = importlib.util.spec_from_file_location("gpu_bench", Path(__file__).resolve().parents[1] / "bench" / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    gpu.save_torchscript(tiny_pipeline, tmp_path / "unet.ts", size=16)
    traced = torch.jit.load(str(tmp_path / "unet.ts"))
    loaded = load_model(str(tiny_pipeline))
    eager = EpsModel(loaded.unet.eval(), loaded.alphas_cumprod, loaded.prediction_type).eval()
    x = torch.randn(3, 3, 32, 24)
    t = torch.tensor([900, 500, 0])
    with torch.no_grad():
        a, b = traced(x, t), eager(x, t)
    assert a.shape == b.shape == x.shape
    assert float((a - b).norm() / b.norm()) < 1e-4


def test_celeba_pack_carries_zeroed_weights_and_unpack_gives_a_loadable_export(tiny_export, tmp_path):
    """bench/celeba.py: the archive holds every graph with its weight tensors zeroed (so it
    compresses for the trip to a GPU machine); unpacked, the weights are random again and
    the manifest's hashes match, so the runtime opens and runs it."""
    import importlib.util
    import tarfile

    import onnx
    from conftest import copy_export
    from onnx import numpy_helper

    from diip_deploy.manifest import load_manifest
    from diip_deploy.runtime.backends.select import open_chain

    spec = importlib.util.spec_from_file_location("celeba", Path(__file__).resolve().parents[1] / "bench" / "celeba.py")
    celeba = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(celeba)
    root = tmp_path / "root"
    copy_export(tiny_export, root / "export")
    archive = tmp_path / "c.tar.gz"
    celeba.pack(root, archive)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "raw", filter="data")
    weights = [
        numpy_helper.to_array(i)
        for i in onnx.load(str(tmp_path / "raw" / "celeba" / "export" / "unet.onnx")).graph.initializer
    ]
    big = [w for w in weights if w.size >= celeba.MIN_WEIGHT and w.dtype == np.float32]
    assert big and all(not w.any() for w in big) and any(w.any() for w in weights if w.size < celeba.MIN_WEIGHT)
    celeba.unpack(archive, tmp_path / "celeba")
    m = load_manifest(tmp_path / "celeba" / "export")
    chain = open_chain(m, "ort-cpu", "surrogate", 1, loop_graph="iterate_surrogate")
    x0, loss, grad = chain.loss_and_grad(np.zeros((1, 3, 16, 16), np.float32), np.zeros((1, 3, 16, 16), np.float32))
    assert np.isfinite(loss).all() and np.abs(grad).max() > 0
    chain.close()


def test_bench_no_exact_runs_no_task_with_the_exact_gradient(tiny_export, tmp_path):

    r, out = _bench(tiny_export, tmp_path, 1, "--task noise25 --max-iters 4 --k-min 1 --no-dip --no-exact")
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "results.json").read_text())
    methods = rep["tasks"]["noise25"]["methods"]
    assert "DIIP surrogate (auto stop)" in methods and not any("exact" in m for m in methods)
    assert rep["settings"]["exact_tasks"] == []


def test_image_grid_lays_rows_of_crops_with_white_gaps():
    from diip_deploy.bench.report import image_grid

    a, b = np.zeros((4, 5, 3)), np.full((4, 5, 3), 0.5)
    grid = image_grid([[a, b], [b, a]], zoom=2)
    assert grid.shape == (2 * (4 + 2 + 4), 2 * (5 + 2 + 5), 3)
    assert np.all(grid[:8, 14:] == 0.5) and np.all(grid[:8, :10] == 0) and np.all(grid[8:12] == 1)
