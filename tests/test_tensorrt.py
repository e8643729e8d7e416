"""TensorRT and GPU paths: what can be checked without a GPU runs here; the rest skips."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO, copy_export
from images import save, smooth_image

from diip_deploy.export.tensorrt_support import SUPPORTED, check_onnx
from diip_deploy.manifest import sha256_file, write_manifest
from diip_deploy.runtime import load_manifest
from diip_deploy.runtime.backends import tensorrt as trt_backend
from diip_deploy.runtime.backends.base import BackendUnavailable
from diip_deploy.runtime.backends.onnxruntime import available_providers
from diip_deploy.runtime.backends.select import select_backend
from diip_deploy.runtime.commands.cli import main as diip_run


def _has_real_tensorrt() -> bool:
    try:
        trt_backend.import_tensorrt()
        trt_backend.current_gpu()
        return True
    except Exception:
        return False


needs_cuda_ep = pytest.mark.skipif(
    "CUDAExecutionProvider" not in available_providers(),
    reason="onnxruntime-gpu with a CUDA device is not available here",
)
needs_tensorrt = pytest.mark.skipif(
    not _has_real_tensorrt(), reason="TensorRT libraries and a CUDA GPU are not available here"
)


def test_exported_graphs_pass_static_tensorrt_check(tiny_export):
    for g in load_manifest(tiny_export).graphs.values():
        r = check_onnx(tiny_export / g["file"])
        assert r.ok, r.summary()
        assert set(r.op_counts) <= SUPPORTED


def test_static_check_flags_unsupported_ops(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["r"], name="sum_dyn_axes"),
        helper.make_node("Unique", ["r"], ["u"], name="uniq"),
        helper.make_node("MyOp", ["u"], ["y"], domain="com.example", name="custom"),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x, axes], [y]),
        opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.example", 1)],
    )
    onnx.save(model, tmp_path / "bad.onnx")
    r = check_onnx(tmp_path / "bad.onnx")
    text = "\n".join(r.errors)
    assert not r.ok and len(r.errors) == 3
    assert "sum_dyn_axes" in text and "build-time constant" in text
    assert "uniq (Unique): not supported" in text and "custom domain 'com.example'" in text


def test_tensorrt_code_type_checks_against_stubs(tmp_path):
    pytest.importorskip("tensorrt_bindings", reason="tensorrt-stubs not installed (pip install '.[test]')")
    from trt_stub_sanitize import sanitized_stubs

    stubs = sanitized_stubs(tmp_path / "stubs")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(REPO / "mypy.ini"),
            "diip_deploy/runtime/backends/tensorrt.py",
            "diip_deploy/export/tensorrt_build.py",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "MYPYPATH": str(stubs)},
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_auto_backend_explains_what_it_skipped(tiny_export):
    if "CUDAExecutionProvider" in available_providers() or _has_real_tensorrt():
        pytest.skip("this machine has a GPU backend; the no-GPU selection is not observable")
    sel = select_backend(load_manifest(tiny_export), "auto")
    assert sel.backend == "ort-cpu"
    assert "no TensorRT engines" in sel.skipped["tensorrt"]
    assert "CUDAExecutionProvider" in sel.skipped["ort-cuda"]
    for requested, needle in (
        ("tensorrt", "no TensorRT engines"),
        ("ort-cuda", "CUDAExecutionProvider"),
        ("ort-tensorrt", "TensorrtExecutionProvider"),
    ):
        with pytest.raises(BackendUnavailable, match=needle):
            select_backend(load_manifest(tiny_export), requested)


def test_cli_reports_backend_choice(tiny_export, tmp_path):
    if "CUDAExecutionProvider" in available_providers():
        pytest.skip("GPU present")
    png = save(tmp_path / "a.png", smooth_image(16, 16))
    r = CliRunner().invoke(
        diip_run, [str(png), "--model", str(tiny_export), "--out", str(tmp_path / "o"), "--max-iters", "2"]
    )
    assert r.exit_code == 0 and "backend ort-cpu (skipped tensorrt:" in r.output
    r = CliRunner().invoke(
        diip_run, [str(png), "--model", str(tiny_export), "--out", str(tmp_path / "o2"), "--backend", "ort-cuda"]
    )
    assert r.exit_code == 2 and "ort-cuda" in r.output and not (tmp_path / "o2").exists()


def _with_fake_engine(tiny_export, tmp_path, **overrides):
    m = copy_export(tiny_export, tmp_path / "m")
    (m / "unet.fp32.engine").write_bytes(b"not a real engine")
    man = json.loads((m / "manifest.json").read_text())
    entry = {
        "file": "unet.fp32.engine",
        "sha256": sha256_file(m / "unet.fp32.engine"),
        "onnx_sha256": man["graphs"]["unet"]["sha256"],
        "tensorrt_version": "10.13.0",
        "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"},
        "precision": "fp32",
    }
    entry.update(overrides)
    man["engines"] = {"unet": entry}
    write_manifest(m, man)
    return m


@pytest.fixture
def no_tensorrt_calls(monkeypatch):
    """Any attempt to reach TensorRT fails the test: refusals must come first."""

    def forbidden(*a, **k):
        raise AssertionError("TensorRT was reached before the manifest check")

    monkeypatch.setattr(trt_backend, "import_tensorrt", forbidden)
    monkeypatch.setattr(trt_backend, "current_gpu", forbidden)


def test_engine_from_other_onnx_refused_before_tensorrt(tiny_export, tmp_path, no_tensorrt_calls):
    m = _with_fake_engine(tiny_export, tmp_path, onnx_sha256="0" * 64)
    runner = trt_backend.TensorRTRunner(load_manifest(m), "unet")
    with pytest.raises(trt_backend.EngineMismatch, match="no longer unet.onnx"):
        runner.activate()


def test_tampered_engine_refused_before_tensorrt(tiny_export, tmp_path, no_tensorrt_calls):
    m = _with_fake_engine(tiny_export, tmp_path)
    (m / "unet.fp32.engine").write_bytes(b"tampered")
    from diip_deploy.manifest import ManifestError

    with pytest.raises(ManifestError, match="does not match the manifest"):
        load_manifest(m)
    man = load_manifest(m, verify_files=False)
    with pytest.raises(ManifestError, match="does not match the manifest"):
        trt_backend.TensorRTRunner(man, "unet").activate()


def test_engine_for_other_tensorrt_or_gpu_refused(tiny_export, tmp_path):
    m = load_manifest(_with_fake_engine(tiny_export, tmp_path))
    h100 = {"name": "NVIDIA H100", "compute_capability": "9.0"}
    assert trt_backend.check_engine_entry(m, "unet", "10.13.0", h100)["precision"] == "fp32"
    with pytest.raises(trt_backend.EngineMismatch, match="built by TensorRT 10.13.0, this is 10.8.0"):
        trt_backend.check_engine_entry(m, "unet", "10.8.0", h100)
    with pytest.raises(trt_backend.EngineMismatch, match="this GPU is Orin"):
        trt_backend.check_engine_entry(m, "unet", "10.13.0", {"name": "Orin", "compute_capability": "8.7"})


@needs_cuda_ep
@pytest.mark.parametrize("gradient", ["exact", "surrogate"])
def test_ort_cuda_matches_cpu(tiny_export, gradient):
    from diip_deploy.export.verify import rel_l2
    from diip_deploy.runtime import open_chain

    rng = np.random.default_rng(0)
    z = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    y = rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    m = load_manifest(tiny_export)
    ref = open_chain(m, "ort-cpu", gradient).loss_and_grad(z, y)
    got = open_chain(m, "ort-cuda", gradient).loss_and_grad(z, y)
    for a, b in zip(got, ref):
        assert rel_l2(a, b) <= 1e-4


FP16_TOLERANCE = {"x0": 2e-2, "grad": 5e-2}  # relative L2 against fp32 (README: Precision)


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engines_match_ort(tiny_export, tmp_path, precision):
    from diip_deploy.export.tensorrt_build import build_engines, parse_profile
    from diip_deploy.export.verify import rel_l2
    from diip_deploy.runtime import open_chain

    m = copy_export(tiny_export, tmp_path / "m")
    man = json.loads((m / "manifest.json").read_text())
    build_engines(m, man, precision, parse_profile("1x4x4", "1x16x16", "2x32x32", man), 512, tmp_path / "cache.bin")
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    y = rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    manifest = load_manifest(m)
    for gradient in ("exact", "surrogate"):
        for fused in (True, False):
            ref = open_chain(manifest, "ort-cpu", gradient, prefer_fused=fused).loss_and_grad(z, y)
            got = open_chain(manifest, "tensorrt", gradient, prefer_fused=fused).loss_and_grad(z, y)
            tol = FP16_TOLERANCE if precision == "fp16" else {"x0": 1e-4, "grad": 1e-4}
            assert rel_l2(got[0], ref[0]) <= tol["x0"] and rel_l2(got[2], ref[2]) <= tol["grad"]
