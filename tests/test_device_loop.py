"""The device loop: iterate_*.onnx holds z and Adam's moments in device buffers, one call
per iteration.  Checked on ONNX Runtime's CPU provider against the host loop (numpy
Adam, per-step graphs) and against the torch reference; the CUDA tests run where
onnxruntime has CUDAExecutionProvider."""

import json

import numpy as np
import pytest
from conftest import copy_export

from diip_deploy.manifest import load_manifest
from diip_deploy.runtime.backends.select import open_chain
from diip_deploy.runtime.optimise.device_loop import DeviceBatch
from diip_deploy.runtime.optimise.joint import restore_joint
from diip_deploy.runtime.optimise.loop import restore_iter
from diip_deploy.runtime.optimise.samples import NonFiniteError
from diip_deploy.runtime.restorer import Restorer
from diip_deploy.settings import RestoreSettings

GRADIENTS = ("surrogate", "exact")


def _ys(n, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal((n, 3, size, size)) * 0.5, -1, 1).astype(np.float32)


def _chains(export, gradient, backend="ort-cpu", **kw):
    m = load_manifest(export)
    return open_chain(m, "ort-cpu", gradient, 1), open_chain(
        m, backend, gradient, 1, loop_graph="iterate_" + gradient, **kw
    )


def test_export_lists_verified_iteration_graphs(tiny_export):
    man = json.loads((tiny_export / "manifest.json").read_text())
    for g in GRADIENTS:
        entry, v = man["graphs"][f"iterate_{g}"], man["verification"][f"iterate_{g}"]
        assert entry["chain"]["timesteps"] == man["chain"]["timesteps"]
        assert v["passed"] and set(v["rel_l2"]) == {
            "x0",
            "loss",
            "laplacian_var",
            "grad_sq",
            "z_next",
            "m_next",
            "v_next",
        }


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_device_batch_steps_as_numpy_adam_does(tiny_export, gradient):
    """Three calls of the iteration graph against the host loop's own pieces: the chain's
    loss and gradient, numpy Adam, the projection and the Laplacian variance."""
    from diip_deploy.runtime.optimise.optim import Adam, project_to_sphere
    from diip_deploy.runtime.optimise.stopping import laplacian_variance

    host, dev = _chains(tiny_export, gradient)
    y = _ys(2)
    z = project_to_sphere(np.random.default_rng(1).standard_normal(y.shape).astype(np.float32))
    batch = DeviceBatch(dev.iterate, z, np.zeros_like(z), np.zeros_like(z), y, np.zeros(2), lr=0.05)
    opt = Adam(lr=0.05)
    for _ in range(3):
        x0, loss, grad = host.loss_and_grad(z, y)
        got_loss, got_lap, got_gsq, rows = batch.run()
        np.testing.assert_allclose(rows.host(), x0, atol=1e-4)
        np.testing.assert_allclose(got_loss, loss, rtol=1e-5)
        np.testing.assert_allclose(got_lap, laplacian_variance(x0), rtol=1e-4)
        np.testing.assert_allclose(got_gsq, (grad.astype(np.float64) ** 2).reshape(2, -1).sum(1), rtol=1e-4)
        z = project_to_sphere(opt.step(z, grad))
        np.testing.assert_allclose(batch.state_host()[0], z, atol=1e-4)
    np.testing.assert_allclose(batch.state_host()[1], opt.m, atol=1e-6)
    assert list(batch.steps) == [3, 3]


def test_x0_of_an_overwritten_buffer_is_refused(tiny_export):
    _, dev = _chains(tiny_export, "surrogate")
    y = _ys(1)
    batch = DeviceBatch(dev.iterate, y.copy(), np.zeros_like(y), np.zeros_like(y), y, np.zeros(1), lr=0.01)
    rows = [batch.run()[3] for _ in range(3)]
    assert rows[1].host().shape == y.shape  # one call later: still on the device
    with pytest.raises(RuntimeError, match="no longer on the device"):
        rows[0].host()  # two calls later: its buffer was written again


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_restore_iter_on_the_device_matches_the_host_loop(tiny_export, gradient):
    """Seven samples through a batch of three, so the set changes as samples stop and the
    device state goes home and back: same stops, same reconstructions."""
    host, dev = _chains(tiny_export, gradient)
    ys = _ys(7)
    cfg = RestoreSettings(lr=0.05, max_iters=20, stop="auto", k_min=4, gradient=gradient)
    seeds = [(0, i) for i in range(7)]
    held, shapes = [], []

    def listen(info):  # a progress bar reads no x0; a preview does, while the iteration is current
        held.append("x0" in info)
        if len(held) == 1:
            shapes.append(info["x0"].shape)

    want = dict(restore_iter(host, ys, cfg, seeds, batch=3))
    got = dict(restore_iter(dev, ys, cfg, seeds, batch=3, callback=listen))
    assert len({want[i].stop_iteration for i in want}) > 1  # samples really left at different times
    for i in range(7):
        assert (got[i].stop_iteration, got[i].stop_reason) == (want[i].stop_iteration, want[i].stop_reason)
        np.testing.assert_allclose(got[i].x0, want[i].x0, atol=1e-4)
        np.testing.assert_allclose(got[i].history["loss"], want[i].history["loss"], rtol=1e-4)
    assert not any(held) and shapes == [(3, 3, 16, 16)]  # x0 came to the host only when asked for


@pytest.mark.parametrize("init", ("noise", "noised"))
def test_restore_joint_on_the_device_matches_the_host_loop(tiny_export, init):
    """Tiles under one stop; each tile's start (``--init noised``: from its own input) is
    made on the host and carried to the device."""
    from diip_deploy.runtime.images.tiling import Blender, plan_tiles

    host, dev = _chains(tiny_export, "surrogate")
    plan = plan_tiles(24, 24, 16, 8)
    ys = _ys(len(plan))
    cfg = RestoreSettings(lr=0.05, max_iters=15, stop="slope", eps=1e-2, slope_window=3, init=init, init_strength=5.0)
    results = [
        restore_joint(c, ys, cfg, Blender(plan, 3), [(0, i) for i in range(len(ys))], batch=3) for c in (host, dev)
    ]
    assert results[0].stop_iteration == results[1].stop_iteration
    np.testing.assert_allclose(results[1].x0, results[0].x0, atol=1e-4)
    np.testing.assert_allclose(results[1].history["laplacian_var"], results[0].history["laplacian_var"], rtol=1e-4)


def test_non_finite_state_on_the_device_is_an_error(tiny_export):
    _, dev = _chains(tiny_export, "surrogate")
    cfg = RestoreSettings(lr=1e38, max_iters=5, stop="none")  # the first step overflows float32
    with pytest.raises(NonFiniteError, match="non-finite at iteration 1"):
        list(restore_iter(dev, _ys(2), cfg))


def test_restorer_loop_choice(tiny_export, tmp_path):
    from diip_deploy.runtime.restorer import Restorer

    img = np.random.default_rng(0).random((20, 28, 3)) * 0.5 + 0.25
    outs = {}
    for loop in ("host", "device"):
        with Restorer(tiny_export, "ort-cpu", 1, batch=4, loop=loop, max_iters=6) as r:
            assert r.loop == loop
            outs[loop], report = r.restore_array(img, 0)
            assert report["run"]["loop"] == loop and report["settings"]["loop"] == loop
    np.testing.assert_allclose(outs["device"], outs["host"], atol=1e-4)
    with Restorer(tiny_export, "ort-cpu", 1, batch=4) as r:
        assert r.loop == "host"  # auto: the device loop is for GPU backends
    with pytest.raises(ValueError, match="Adam .* with the projection"):
        Restorer(tiny_export, "ort-cpu", 1, loop="device", optimizer="gd")
    with pytest.raises(ValueError, match="betas 0.9, 0.999"):  # the betas traced into the graph
        Restorer(tiny_export, "ort-cpu", 1, loop="device", adam_beta1=0.7)
    with pytest.raises(ValueError, match="--steps-per-eval 1"):  # one step per call, traced
        Restorer(tiny_export, "ort-cpu", 1, loop="device", steps_per_eval=2)
    with Restorer(tiny_export, "ort-cpu", 1, loop="auto", steps_per_eval=2) as r:
        assert r.loop == "host" and "unet" in r.chain.runners and not r.chain.uses_fused

    bare = copy_export(tiny_export, tmp_path / "bare")
    man = json.loads((bare / "manifest.json").read_text())
    man["graphs"] = {k: v for k, v in man["graphs"].items() if not k.startswith("iterate_")}
    (bare / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="--iterate surrogate --add"):
        Restorer(bare, "ort-cpu", 1, loop="device")


def test_fp16_copies_leave_the_iteration_graphs_out(tiny_export, tmp_path):
    from diip_deploy.export.fp16 import add_fp16_graphs

    out = copy_export(tiny_export, tmp_path / "x")
    add_fp16_graphs(out, log=lambda m: None)
    graphs = json.loads((out / "manifest.json").read_text())["graphs"]
    assert "unet_fp16" in graphs and not any(n.startswith("iterate_") and n.endswith("_fp16") for n in graphs)


def _cuda():
    from diip_deploy.runtime.backends.onnxruntime import available_providers

    return "CUDAExecutionProvider" in available_providers()


@pytest.mark.skipif(
    not _cuda(), reason="onnxruntime here has no CUDAExecutionProvider (needs onnxruntime-gpu and a GPU)"
)
@pytest.mark.parametrize("cuda_graph", (False, True))
def test_device_loop_on_cuda_matches_the_cpu(tiny_export, cuda_graph):
    host, dev = _chains(tiny_export, "surrogate", backend="ort-cuda", cuda_graph=cuda_graph)
    ys = _ys(4)
    cfg = RestoreSettings(lr=0.05, max_iters=12, stop="none")
    want = dict(restore_iter(host, ys, cfg, batch=4))
    got = dict(restore_iter(dev, ys, cfg, batch=4))
    for i in range(4):
        np.testing.assert_allclose(got[i].x0, want[i].x0, atol=2e-3)


def test_add_puts_an_iteration_graph_into_an_existing_export(tiny_pipeline, tiny_export, tmp_path):
    """diip-export --add: only the graph asked for is exported and listed; the export's
    other graphs, tuned defaults and records stay as they were."""
    from diip_deploy.export.pipeline import export_model
    from diip_deploy.manifest import write_manifest
    from diip_deploy.runtime.restorer import Restorer

    out = copy_export(tiny_export, tmp_path / "x")
    man = json.loads((out / "manifest.json").read_text())
    for key in ("graphs", "verification"):
        man[key].pop("iterate_surrogate")
    man["defaults"]["eps"] = 0.0123  # as diip-tune choose --write would leave it
    (out / "iterate_surrogate.onnx").unlink()
    write_manifest(out, man)
    export_model(
        str(tiny_pipeline), out, steps=2, gradient="surrogate", iterate="surrogate", add=True, log=lambda m: None
    )
    after = json.loads((out / "manifest.json").read_text())
    assert after["verification"]["iterate_surrogate"]["passed"] and (out / "iterate_surrogate.onnx").exists()
    assert after["defaults"]["eps"] == 0.0123 and after["graphs"]["unet"] == man["graphs"]["unet"]
    assert set(after["graphs"]) == set(man["graphs"]) | {"iterate_surrogate"}
    with Restorer(out, "ort-cpu", 1, loop="device", max_iters=3) as r:
        assert r.loop == "device"


def test_add_refuses_other_weights_or_another_chain(tiny_export, tiny_pipeline, tmp_path):
    import click
    from tiny_model import make_tiny_pipeline

    from diip_deploy.export.pipeline import export_model

    out = copy_export(tiny_export, tmp_path / "x")
    other = make_tiny_pipeline(tmp_path / "other", seed=1)
    with pytest.raises(click.ClickException, match="other weights"):
        export_model(str(other), out, steps=2, iterate="surrogate", add=True, log=lambda m: None)
    with pytest.raises(click.ClickException, match="another chain"):
        export_model(str(tiny_pipeline), out, steps=3, iterate="surrogate", add=True, log=lambda m: None)
    assert json.loads((out / "manifest.json").read_text()) == json.loads((tiny_export / "manifest.json").read_text())


def test_fp16_iteration_graph_runs_the_unet_in_fp16_and_the_rest_in_fp32(tiny_pipeline, tiny_export, tmp_path):
    """diip-export --iterate surrogate --precision fp16: the twin's weights are float16,
    its edges float32, it passes fp16's tolerances against fp32 autograd, and diip-run
    --precision fp16 --loop device runs it."""
    import onnx

    from diip_deploy.export.fp16 import add_fp16_graphs
    from diip_deploy.export.pipeline import export_model
    from diip_deploy.runtime.restorer import Restorer

    out = copy_export(tiny_export, tmp_path / "x")
    export_model(
        str(tiny_pipeline),
        out,
        steps=2,
        gradient="surrogate",
        iterate="surrogate",
        add=True,
        iterate_fp16=True,
        log=lambda m: None,
    )
    add_fp16_graphs(out)  # the host loop's fp16 copies, which --precision fp16 also opens
    man = json.loads((out / "manifest.json").read_text())
    entry, v = man["graphs"]["iterate_surrogate_fp16"], man["verification"]["iterate_surrogate_fp16"]
    assert entry["precision"] == "fp16" and entry["fp16_of"] == "iterate_surrogate"
    assert v["passed"] and v["tolerance"]["x0"] == 2e-2 and 0 < v["rel_l2"]["x0"] <= 2e-2
    g = onnx.load(str(out / entry["file"])).graph
    assert {i.data_type for i in g.initializer if len(i.dims) == 4} == {onnx.TensorProto.FLOAT16}  # conv weights
    assert {x.type.tensor_type.elem_type for x in list(g.input) + list(g.output)} == {onnx.TensorProto.FLOAT}
    img = np.random.default_rng(0).random((20, 28, 3)) * 0.5 + 0.25
    outs = {}
    for precision in ("fp32", "fp16"):
        with Restorer(out, "ort-cpu", 1, batch=4, loop="device", precision=precision, max_iters=6) as r:
            assert r.chain.iterate.path.name == f"iterate_surrogate{'_fp16' if precision == 'fp16' else ''}.onnx"
            outs[precision], _ = r.restore_array(img, 0)
    assert 0 < np.abs(outs["fp16"] - outs["fp32"]).max() < 0.05


def test_a_falling_rate_runs_on_the_host():
    """The iteration graphs take one rate per run: --lr-final below 1 keeps the loop on the
    host under auto, and --loop device says how to get a device loop."""
    from diip_deploy.runtime.optimise.optim import scheduled_lr
    from diip_deploy.runtime.optimise.samples import iteration_graph_fits

    assert iteration_graph_fits(RestoreSettings()) and not iteration_graph_fits(RestoreSettings(lr_final=0.5))
    assert scheduled_lr(0.1, 0.2, 0, 40) == pytest.approx(0.1)
    assert scheduled_lr(0.1, 0.2, 20, 40) == pytest.approx(0.06)
    assert scheduled_lr(0.1, 0.2, 40, 40) == pytest.approx(0.02) == scheduled_lr(0.1, 0.2, 55, 40)
    assert scheduled_lr(0.1, 1.0, 30, 40) == 0.1


def test_device_loop_refuses_a_falling_rate(tiny_export):
    with pytest.raises(ValueError, match="--lr-final 1"):
        Restorer(tiny_export, "ort-cpu", 1, lr_final=0.5, loop="device")
