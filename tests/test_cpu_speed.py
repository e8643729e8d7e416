"""The CPU speed work (issue 18): the OpenVINO backend and its verified bf16 variant,
``--backend auto`` among verified variants, balanced batches, the early guard decision,
the work-based ETA and the benchmark's FLOP count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_export

from diip_deploy.manifest import ManifestError, load_manifest, read_data, write_manifest
from diip_deploy.runtime.backends.openvino import unavailable_reason
from diip_deploy.runtime.backends.select import make_runner, select_backend
from diip_deploy.runtime.commands.progress import WorkClock
from diip_deploy.runtime.optimise.joint import balanced_chunks
from diip_deploy.runtime.restorer import Restorer

needs_openvino = pytest.mark.skipif(bool(unavailable_reason()), reason=f"{unavailable_reason()}")


def _tiles(manifest, n=3, seed=0):
    t = manifest.tile_size
    return {
        "sample": np.random.default_rng(seed).standard_normal((n, manifest.channels, t, t)).astype(np.float32),
        "timestep": np.full((n,), manifest.chain_spec.timesteps[0], dtype=np.int64),
    }


@needs_openvino
def test_openvino_runner_matches_onnxruntime(tiny_export):
    """The same graph through OpenVINO fp32 and ONNX Runtime: the same eps; bf16 close."""
    m = load_manifest(tiny_export)
    feed = _tiles(m)
    ref = make_runner(m, "ort-cpu", "unet", 1).activate().infer(feed)["eps"]
    for precision, tol in (("fp32", 1e-4), ("bf16", 5e-2)):
        runner = make_runner(m, "openvino", "unet", 1, precision=precision).activate()
        got = runner.infer(feed)["eps"]
        assert got.shape == ref.shape
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < tol, precision
        again = runner.infer(_tiles(m, n=5, seed=1))["eps"]  # another batch size: dynamic shapes
        assert again.shape[0] == 5
        runner.deactivate()


@needs_openvino
def test_openvino_compiles_a_recurring_shape_static(tiny_export):
    """A shape called ``static_after`` times gets its own static compile, which computes
    what the dynamic model computes (fp32: the same kernels' arithmetic); a shape seen
    fewer times stays dynamic, at most ``max_static`` shapes are compiled, and
    ``static_after = None`` never compiles one."""
    from diip_deploy.runtime.backends.openvino import OpenVinoRunner

    m = load_manifest(tiny_export)
    runner = make_runner(m, "openvino", "unet", 1, precision="fp32").activate()
    assert isinstance(runner, OpenVinoRunner) and runner.static_after == 3
    feed = _tiles(m, n=4)
    dynamic = runner.infer(feed)["eps"]
    runner.infer(feed)
    assert runner.static_shapes == []
    static = runner.infer(feed)["eps"]  # the third call of the shape: compiled for it
    key = tuple(tuple(feed[k].shape) for k in runner.input_names)
    assert runner.static_shapes == [key]
    assert np.max(np.abs(static - dynamic)) < 1e-5
    other = _tiles(m, n=2, seed=3)
    runner.infer(other)  # once only: stays dynamic
    assert runner.static_shapes == [key]
    runner.max_static = 1
    for _ in range(3):
        runner.infer(other)
    assert runner.static_shapes == [key]  # the cap holds
    runner.deactivate()

    runner = make_runner(m, "openvino", "unet", 1, precision="fp32")
    runner.static_after = None
    runner.activate()
    for _ in range(4):
        runner.infer(feed)
    assert runner.static_shapes == []
    runner.deactivate()


@needs_openvino
def test_openvino_restores_like_onnxruntime(tiny_export):
    """--backend openvino (fp32) restores what ort-cpu restores, to float tolerance."""
    img = np.random.default_rng(0).uniform(0, 1, (24, 20, 3)).astype(np.float32)
    outs = {}
    for backend in ("ort-cpu", "openvino"):
        with Restorer(tiny_export, backend, 1, max_iters=5, precision="fp32") as r:
            outs[backend], rep = r.restore_array(img)
            assert rep["settings"]["precision"] == "fp32"
    assert np.max(np.abs(outs["ort-cpu"] - outs["openvino"])) < 2e-3


@needs_openvino
def test_bf16_runs_only_where_verified(tiny_export, tmp_path):
    """Unverified, bf16 is refused (Restorer and diip-run, one line, exit 2) and auto never
    takes it; diip-variants verifies it on restorations and records it; then bf16 runs,
    and auto times the verified variants here and takes the faster; a failed record is
    as good as none."""
    export = copy_export(tiny_export, tmp_path / "export")
    with pytest.raises(ManifestError, match="bf16 is not verified"):
        Restorer(export, "openvino", 1, precision="bf16")
    png = tmp_path / "a.png"
    from diip_deploy.runtime.images.codec import save_image

    save_image(png, np.random.default_rng(0).uniform(0, 1, (16, 16, 3)))
    cmd = [sys.executable, "-m", "diip_deploy.runtime.commands.cli", str(png), "--model", str(export)]
    p = subprocess.run(
        cmd + ["--out", str(tmp_path / "o"), "--backend", "openvino", "--precision", "bf16"],
        text=True,
        capture_output=True,
    )
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "diip-variants" in p.stderr
    sel = select_backend(load_manifest(export), "auto", "auto", 1)
    assert (sel.backend, sel.precision) == ("ort-cpu", "fp32") and "not verified" in sel.skipped["openvino-bf16"]

    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "diip_deploy.bench.variants",
            str(export),
            "--n",
            "2",
            "--task",
            "noise25",
            "--threads",
            "1",
        ],
        text=True,
        capture_output=True,
    )
    assert p.returncode == 0, p.stderr
    from diip_deploy.runtime.backends.openvino import cpu_has_bf16

    record = read_data(export)["variants"]["openvino-bf16"]
    assert record["native"] is cpu_has_bf16()
    assert record["passed"] is (record["worst_loss_db"] <= 0.1 and record["native"])
    assert record["defaults"] == read_data(export)["defaults"]
    assert record["worst_loss_db"] == max(0.0, -min(t["delta_db"] for t in record["tasks"].values()))
    assert set(record["tasks"]) == {"noise25"} and record["speed_vs_ort_fp32"] > 0
    load_manifest(export)  # still a valid manifest

    if record["passed"]:
        with Restorer(export, "openvino", 1, precision="bf16", max_iters=3) as r:
            out, rep = r.restore_array(np.random.default_rng(1).uniform(0, 1, (16, 16, 3)).astype(np.float32))
            assert rep["settings"]["precision"] == "bf16" and np.all(np.isfinite(out))
        sel = select_backend(load_manifest(export), "auto", "auto", 1)
        if cpu_has_bf16():
            assert set(sel.timed) == {"ort-fp32", "openvino-bf16"}
            fastest = min(sel.timed, key=sel.timed.get)
            assert {"ort-fp32": "ort-cpu", "openvino-bf16": "openvino"}[fastest] == sel.backend
    data = read_data(export)
    other = "mask" if data["defaults"].get("clamp_gradient") == "straight" else "straight"
    data["variants"]["openvino-bf16"].update(passed=True, defaults={**data["defaults"], "clamp_gradient": other})
    write_manifest(export, data)  # verified, but under defaults the export no longer has
    with pytest.raises(ManifestError, match=r"not verified under this export's defaults .*clamp_gradient"):
        Restorer(export, "openvino", 1, precision="bf16")
    assert "clamp_gradient" in select_backend(load_manifest(export), "auto", "auto", 1).skipped["openvino-bf16"]
    data["variants"]["openvino-bf16"]["passed"] = False
    write_manifest(export, data)
    with pytest.raises(ManifestError, match="not verified"):
        Restorer(export, "openvino", 1, precision="bf16")
    assert select_backend(load_manifest(export), "auto", "auto", 1).backend == "ort-cpu"


def test_bf16_needs_openvino_and_openvino_no_fp16(tiny_export):
    with pytest.raises(ValueError, match="bf16 runs on --backend openvino"):
        Restorer(tiny_export, "ort-cpu", 1, precision="bf16")
    if not unavailable_reason():
        with pytest.raises(ValueError, match="fp32 or bf16"):
            Restorer(tiny_export, "openvino", 1, precision="fp16")


def test_balanced_chunks_cover_everything_once_in_fewest_calls():
    for n in range(1, 40):
        for batch in (1, 3, 8):
            chunks = balanced_chunks(list(range(n)), batch)
            assert [i for c in chunks for i in c] == list(range(n))
            assert len(chunks) == -(-n // batch) and max(map(len, chunks)) - min(map(len, chunks)) <= 1
            assert max(map(len, chunks)) <= batch
    assert [len(c) for c in balanced_chunks(list(range(9)), 8)] == [4, 5]


def test_early_guard_returns_the_input_at_guard_at(tiny_export):
    """A region the guard would revert stops at guard_at with the input; guard_at 0 or the
    guard off runs on; the output does not depend on the batch."""
    img = np.random.default_rng(0).uniform(0, 1, (24, 24, 3)).astype(np.float32)
    common = dict(max_iters=12, stop="none", residual_guard=0.001)
    with Restorer(tiny_export, "ort-cpu", 1, guard_at=4, **common) as r:
        out, rep = r.restore_array(img)
    assert rep["stop_reason"] == "guard" and rep["stop_iteration"] == 3
    assert rep["iterations_run"] == 4 * rep["tiling"]["tiles"]
    assert rep["guard"]["reverted_to_input"] == 1
    assert np.max(np.abs(out - img)) < 1e-6  # the input, blended back exactly
    with Restorer(tiny_export, "ort-cpu", 1, guard_at=0, **common) as r:
        _, rep0 = r.restore_array(img)
    assert rep0["stop_reason"] == "max_iters" and rep0["guard"]["reverted_to_input"] == 1
    with Restorer(tiny_export, "ort-cpu", 1, guard_at=4, max_iters=12, stop="none", residual_guard=1.0) as r:
        _, rep1 = r.restore_array(img)
    assert rep1["stop_reason"] == "max_iters"


def test_work_clock_counts_tile_iterations_and_drops_finished_units():
    clock = WorkClock(tiles=6, max_iters=10)
    assert clock.left() == 60
    for k in range(5):  # unit 0: 4 tiles in lockstep
        clock({"index": range(4), "k": [k] * 4, "done": 0, "total": 6, "unit": 0})
    assert clock.work == 20 and clock.left() == 60 - 20
    clock({"index": range(4), "k": [5] * 4, "done": 4, "total": 6, "unit": 0})  # unit 0 stops at 5
    assert clock.left() == 2 * 10 and clock.work == 24
    clock({"index": range(2), "k": [0, 0], "done": 4, "total": 6, "unit": 1})
    assert clock.left() == 18 and 0 < clock.fraction < 1 and clock.eta() >= 0


def test_count_flops_of_a_known_graph(tmp_path):
    """A Conv (3->8, 3x3, 16x16 out) and a MatMul ([2,16,32] x [32,5]): FLOPs by hand."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from diip_deploy.bench.cpu_speed import count_flops

    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    b = numpy_helper.from_array(np.zeros((32, 5), np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("MatMul", ["m", "b"], ["o"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, None, None]),
            helper.make_tensor_value_info("m", TensorProto.FLOAT, [2, 16, 32]),
        ],
        [
            helper.make_tensor_value_info("c", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("o", TensorProto.FLOAT, None),
        ],
        [w, b],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    feed = {"x": np.zeros((2, 3, 16, 16), np.float32), "m": np.zeros((2, 16, 32), np.float32)}
    assert count_flops(str(path), feed) == 2 * (2 * 8 * 16 * 16) * (3 * 3 * 3) + 2 * (2 * 16 * 5) * 32


def test_iteration_rows_split_unet_and_host_time(tiny_export):
    from diip_deploy.bench.cpu_speed import iteration_rows

    img = np.random.default_rng(0).uniform(0, 1, (40, 40, 3)).astype(np.float32)
    rows = iteration_rows(str(tiny_export), img, ["ort-fp32"], 1, 2)
    row = rows["ort-fp32"]
    assert row["tiles"] > 1 and row["unet_ms"] > 0 and 0 < row["host_share"] < 1
    assert abs(row["unet_ms"] + row["host_ms"] - row["ms_per_tile_iteration"]) < 0.02


def test_run_help_lists_openvino_and_guard_at():
    p = subprocess.run([sys.executable, "-m", "diip_deploy.runtime.commands.cli", "-h"], text=True, capture_output=True)
    assert p.returncode == 0 and "openvino" in p.stdout and "--guard-at" in p.stdout and "bf16" in p.stdout
    json.dumps(p.stdout)


def test_photo_row_restores_and_checks_its_eta(tiny_export):
    """The benchmark's whole-photo row: PSNR in and out, the stop, and the ETA read at 10%
    of the work against the time the run really took from there (run to the cap, the ETA
    counts the same work that is left)."""
    from diip_deploy.bench.cpu_speed import photo_row

    clean = np.random.default_rng(0).uniform(0, 1, (40, 40, 3))
    damaged = np.clip(clean + np.random.default_rng(1).normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    row = photo_row(str(tiny_export), clean, damaged, "ort-cpu", 1, {"max_iters": 20, "stop": "none"})
    assert row["tiles"] > 1 and row["stop"] == 19 and row["stop_reason"] == "max_iters"
    assert row["input_psnr"] > 0 and row["output_psnr"] > 0 and row["seconds"] > 0
    assert row["eta_at_10pct_s"] is not None and row["actual_remaining_s"] is not None
    assert row["settings"] == {"max_iters": 20, "stop": "none"}


def test_cpu_steps_restores_with_another_chain_from_the_same_graphs(tiny_export, tmp_path):
    """bench/cpu_steps.py: a copy of the export with a shorter chain is a valid manifest the
    runtime restores with (the UNet graph takes the timestep), at the scheduler's alphas."""
    import importlib.util

    from diip_deploy.runtime.restorer import Restorer
    from diip_deploy.schedule import linear_alphas_cumprod

    path = Path(__file__).resolve().parents[1] / "bench" / "cpu_steps.py"
    spec = importlib.util.spec_from_file_location("cpu_steps", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    short = mod.export_with_chain(Path(tiny_export), [500, 0], tmp_path)
    m = load_manifest(short)
    assert m.chain_spec.timesteps == (500, 0)
    np.testing.assert_allclose(m.chain_spec.alphas, linear_alphas_cumprod()[[500, 0]])
    img = np.random.default_rng(0).uniform(0.2, 0.8, (16, 16, 3)).astype(np.float32)
    outs = {}
    for name, export in (("short", short), ("shipped", tiny_export)):
        with Restorer(export, "ort-cpu", 1, max_iters=2, stop="none") as r:
            outs[name], _ = r.restore_array(img)
    assert np.all(np.isfinite(outs["short"])) and not np.allclose(outs["short"], outs["shipped"])


@needs_openvino
def test_openvino_keeps_a_shape_it_cannot_fix_dynamic(tiny_export, monkeypatch):
    """Where the static compile of a shape fails, the call runs on the dynamic model, gives
    its output, and that shape is not tried again."""
    from diip_deploy.runtime.backends.openvino import OpenVinoRunner

    m = load_manifest(tiny_export)
    runner = make_runner(m, "openvino", "unet", 1, precision="fp32").activate()
    tries = []
    monkeypatch.setattr(OpenVinoRunner, "_compile_static", lambda self, shapes: tries.append(shapes))
    feed = _tiles(m, n=3)
    first = runner.infer(feed)["eps"]
    for _ in range(5):
        assert np.array_equal(runner.infer(feed)["eps"], first)
    assert len(tries) == 1 and runner.static_shapes == []
    runner.deactivate()


@needs_openvino
def test_openvino_static_bench_compares_the_two_compiles(tiny_export, tmp_path):
    """bench/openvino_static.py on the tiny export in fp32, UNet rows only: each row holds
    both sides' times, the static side really compiled its shape, and the two outputs
    agree (fp32)."""
    out = tmp_path / "ovs.json"
    cmd = [sys.executable, "bench/openvino_static.py", "--export", str(tiny_export), "--precision", "fp32"]
    p = subprocess.run(cmd + ["--tasks", "", "--rounds", "2", "--json", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [row["batch"] for row in report["unet"]] == [8, 7]
    for row in report["unet"]:
        assert set(row["ms"]) == {"dynamic", "static"} and min(row["ms"].values()) > 0
        assert len(row["static_shapes"]) == 1 and row["static_shapes"][0][0][0] == row["batch"]
        assert row["max_abs_difference"] < 1e-5
    assert "photo" not in report


def test_alternating_runs_take_turns_abba_and_keep_the_median():
    """The side-by-side photo benchmarks' loop: sides take turns ABBA from round ``first``,
    each side keeps its first run's fields with the median of its seconds."""
    from diip_deploy.bench.cpu_speed import alternating_runs

    order, times = [], {"a": iter([5.0, 1.0, 3.0]), "b": iter([2.0, 4.0, 9.0])}

    def run(side):
        order.append(side)
        return {"seconds": next(times[side]), "psnr": 30.0 if side == "a" else 31.0, "unkept": 0}

    heard = []
    got = alternating_runs(run, ["a", "b"], 3, ("seconds", "psnr"), on_run=lambda s, kept: heard.append(s))
    assert order == ["a", "b", "b", "a", "a", "b"] and heard == order
    assert got["a"] == {"seconds": 3.0, "psnr": 30.0, "runs_seconds": [5.0, 1.0, 3.0]}
    assert got["b"] == {"seconds": 4.0, "psnr": 31.0, "runs_seconds": [2.0, 4.0, 9.0]}
    order.clear()
    times = {"a": iter([1.0, 1.0]), "b": iter([1.0, 1.0])}
    alternating_runs(run, ["a", "b"], 2, ("seconds",), first=1)
    assert order == ["b", "a", "a", "b"]  # an odd first round starts reversed
