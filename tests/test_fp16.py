"""fp16 ONNX copies (diip-fp16): float16 inside, float32 at the edges, verified through the
chain against fp32 on ORT's CPU provider, and run by diip-run --precision fp16."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import copy_export
from images import save, smooth_image

from diip_deploy.export import fp16
from diip_deploy.runtime.commands.cli import main as diip_run


@pytest.fixture(scope="module")
def fp16_export(tiny_export, tmp_path_factory):
    out = copy_export(tiny_export, tmp_path_factory.mktemp("fp16") / "export")
    r = CliRunner().invoke(fp16.main, [str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_copies_are_fp16_inside_and_fp32_at_the_edges(fp16_export):
    import onnx

    m = json.loads((fp16_export / "manifest.json").read_text())
    originals = [n for n in m["graphs"] if not n.endswith("_fp16") and not n.startswith("iterate_")]
    assert set(originals) == {"unet", "unet_vjp", "chain_exact", "chain_surrogate"}
    for name in originals:
        entry = m["graphs"][f"{name}_fp16"]
        assert entry["precision"] == "fp16" and entry["fp16_of"] == name
        g = onnx.load(str(fp16_export / entry["file"])).graph
        dtypes = {init.data_type for init in g.initializer}
        assert onnx.TensorProto.FLOAT16 in dtypes  # the weights went to fp16
        edges = [v.type.tensor_type.elem_type for v in list(g.input) + list(g.output)]
        assert onnx.TensorProto.FLOAT16 not in edges  # fed and read as the fp32 graph is
        kept = {n.op_type for n in g.node if n.op_type in fp16.FP32_OPS}
        assert kept  # normalisation / reductions / softmax are there, and were left in fp32 (below)
    section = m["fp16"]
    assert set(section["errors"]) == {"surrogate", "exact"}
    for errors in section["errors"].values():
        assert 0 < errors["x0"] <= fp16.TOLERANCE["x0"] and 0 < errors["grad"] <= fp16.TOLERANCE["grad"]


def test_diip_run_fp16_is_close_to_fp32(fp16_export, tmp_path):
    rng = np.random.default_rng(0)
    png = save(tmp_path / "a.png", np.clip(smooth_image(32, 32, 1) + rng.normal(0, 0.08, (32, 32, 3)), 0, 1))
    outs = {}
    for precision in ("fp32", "fp16"):
        out = tmp_path / precision
        r = CliRunner().invoke(
            diip_run,
            [
                str(png),
                "--model",
                str(fp16_export),
                "--out",
                str(out),
                "--tile",
                "16",
                "--max-iters",
                "8",
                "--stop",
                "none",
                "--precision",
                precision,
                "--quiet",
            ],
        )
        assert r.exit_code == 0, r.output
        assert json.loads((out / "a.json").read_text())["settings"]["precision"] == precision
        from PIL import Image

        outs[precision] = np.asarray(Image.open(out / "a.png"), dtype=np.float64)
    diff = np.abs(outs["fp16"] - outs["fp32"])
    assert diff.max() > 0  # the fp16 graphs really ran
    assert diff.mean() < 2.0  # in 8-bit levels: the same restoration


def test_precision_fp16_without_fp16_graphs_is_one_line(tiny_export, tmp_path):
    png = save(tmp_path / "a.png", smooth_image(16, 16, 0))
    r = CliRunner().invoke(
        diip_run,
        [str(png), "--model", str(tiny_export), "--out", str(tmp_path / "o"), "--precision", "fp16", "--quiet"],
    )
    assert r.exit_code == 2 and "diip-fp16" in r.output
    assert len([line for line in r.output.splitlines() if "error" in line]) == 1
    assert not (tmp_path / "o" / "a.png").exists()


def test_copies_that_miss_the_tolerance_are_not_listed(tiny_export, tmp_path, monkeypatch):
    out = copy_export(tiny_export, tmp_path / "export")
    before = (out / "manifest.json").read_bytes()
    files = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(fp16, "TOLERANCE", {"x0": 1e-9, "grad": 1e-9})
    r = CliRunner().invoke(fp16.main, [str(out)])
    assert r.exit_code == 2 and "misses its tolerance" in r.output
    assert (out / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == files


def test_tensorrt_ep_gets_fp16_from_its_own_builder(tiny_export):
    """ort-tensorrt at fp16 keeps the fp32 graph and asks TensorRT's EP for fp16 engines
    (its options; the session itself needs TensorRT, which is not here)."""
    from diip_deploy.manifest import load_manifest
    from diip_deploy.runtime.backends.select import make_runner

    m = load_manifest(tiny_export)
    runner = make_runner(m, "ort-tensorrt", "unet", trt_fp16=True)
    opts = runner.provider_options["TensorrtExecutionProvider"]
    assert opts["trt_fp16_enable"] == "True" and opts["trt_engine_cache_enable"] == "True"
    assert runner.path.name == "unet.onnx"
    assert (
        make_runner(m, "ort-tensorrt", "unet").provider_options["TensorrtExecutionProvider"]["trt_fp16_enable"]
        == "False"
    )
