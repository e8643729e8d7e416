"""diip-run end to end on the tiny export, and its handling of odd and bad input."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import copy_export
from images import save, smooth_image
from PIL import Image

from diip_deploy.runtime.commands.cli import main as diip_run


def run(args):
    return CliRunner().invoke(diip_run, [str(a) for a in args], catch_exceptions=False)


def test_restores_png_and_jpeg_with_report(tiny_export, tmp_path):
    a = smooth_image(16, 16)
    png = save(tmp_path / "a.png", a)
    jpg = save(tmp_path / "b.jpg", a, quality=60)
    out = tmp_path / "out"
    r = run([png, jpg, "--model", tiny_export, "--out", out, "--max-iters", "8", "--stop", "none", "--save-plots"])
    assert r.exit_code == 0, r.output
    for stem in ("a", "b"):
        img = np.asarray(Image.open(out / f"{stem}.png"))
        assert img.shape == (16, 16, 3)
        rep = json.loads((out / f"{stem}.json").read_text())
        for key in (
            "stop_iteration",
            "stop_reason",
            "iterations_run",
            "backend",
            "settings",
            "seed",
            "history",
            "tiling",
            "png_sha256",
            "complete",
        ):
            assert key in rep
        assert rep["iterations_run"] == 8 and rep["stop_reason"] == "max_iters" and rep["backend"] == "ort-cpu"
        assert len(rep["history"]["loss"]) == 8 and len(rep["history"]["laplacian_var"]) == 8
        assert rep["history"]["loss"][-1] < rep["history"]["loss"][0]
        assert (out / f"{stem}_curves.png").stat().st_size > 0 and (out / f"{stem}_before_after.png").exists()


def test_manifest_defaults_and_overrides(tiny_export, tmp_path):
    png = save(tmp_path / "a.png", smooth_image(16, 16))
    r = run([png, "--model", tiny_export, "--out", tmp_path / "o", "--quiet"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "o" / "a.json").read_text())
    assert (
        rep["settings"]["lr"] == 0.02
        and rep["settings"]["max_iters"] == 12
        and rep["settings"]["gradient"] == "surrogate"
    )
    r = run(
        [
            png,
            "--model",
            tiny_export,
            "--out",
            tmp_path / "o2",
            "--quiet",
            "--gradient",
            "exact",
            "--lr",
            "0.1",
            "--max-iters",
            "4",
            "--seed",
            "3",
            "--optimizer",
            "gd",
        ]
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "o2" / "a.json").read_text())
    assert (rep["settings"]["lr"], rep["iterations_run"], rep["seed"], rep["settings"]["gradient"]) == (
        0.1,
        4,
        3,
        "exact",
    )


def test_an_explicit_gradient_wins_over_a_conflicting_manifest_default(tiny_export, tmp_path):
    """The model's steps_per_eval 2 needs the surrogate gradient; --gradient exact is a
    documented option, so the default yields (with a note in the report and on stderr), while
    a conflict the user asks for is one line that says how to get what was asked."""
    from diip_deploy.manifest.writing import set_defaults, write_manifest

    export = copy_export(tiny_export, tmp_path / "export")
    data = json.loads((export / "manifest.json").read_text())
    set_defaults(data, {"steps_per_eval": 2})
    write_manifest(export, data)
    png = save(tmp_path / "a.png", smooth_image(16, 16))
    r = run([png, "--model", export, "--out", tmp_path / "o", "--gradient", "exact", "--max-iters", "3"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "o" / "a.json").read_text())
    assert rep["settings"]["gradient"] == "exact" and rep["settings"]["steps_per_eval"] == 1
    assert rep["notes"] == [
        "steps_per_eval: the model's default 2 conflicts with --gradient exact; 1 used "
        "(--steps-per-eval above 1 reuses the UNet's eps, which only --gradient surrogate holds constant)"
    ]
    assert "note: steps_per_eval: the model's default 2" in r.output
    r = run([png, "--model", export, "--out", tmp_path / "o2", "--quiet", "--max-iters", "3"])
    rep = json.loads((tmp_path / "o2" / "a.json").read_text())
    assert r.exit_code == 0 and rep["settings"]["steps_per_eval"] == 2 and "notes" not in rep
    r = run([png, "--model", export, "--out", tmp_path / "o3", "--gradient", "exact", "--steps-per-eval", "2"])
    assert r.exit_code == 2 and not (tmp_path / "o3" / "a.png").exists()
    assert "give --steps-per-eval 1 with --gradient exact" in r.output and len(r.output.strip().splitlines()) == 1


def test_clamp_gradient_reaches_the_cli_the_manifest_and_the_report(tiny_export, tmp_path):
    from diip_deploy.manifest.writing import set_defaults, write_manifest

    png = save(tmp_path / "a.png", smooth_image(16, 16))
    r = run([png, "--model", tiny_export, "--out", tmp_path / "o", "--quiet", "--clamp-gradient", "straight"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "a.json").read_text())["settings"]["clamp_gradient"] == "straight"
    export = copy_export(tiny_export, tmp_path / "export")
    data = json.loads((export / "manifest.json").read_text())
    set_defaults(data, {"clamp_gradient": "straight"})
    write_manifest(export, data)
    r = run([png, "--model", export, "--out", tmp_path / "o2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o2" / "a.json").read_text())["settings"]["clamp_gradient"] == "straight"
    r = run([png, "--model", tiny_export, "--out", tmp_path / "o3", "--clamp-gradient", "soft"])
    assert r.exit_code == 2 and "mask" in r.output and "straight" in r.output


def test_same_seed_same_result(tiny_export, tmp_path):
    png = save(tmp_path / "a.png", smooth_image(16, 16))
    outs = []
    for i, seed in enumerate((1, 1, 2)):
        run([png, "--model", tiny_export, "--out", tmp_path / f"o{i}", "--quiet", "--max-iters", "3", "--seed", seed])
        outs.append(json.loads((tmp_path / f"o{i}" / "a.json").read_text())["history"]["loss"])
    assert outs[0] == outs[1] and outs[0] != outs[2]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grayscale_alpha_palette_and_odd_sizes(tiny_export, tmp_path, mode):
    src = save(tmp_path / "odd.png", smooth_image(13, 19), mode=mode)  # not multiples of 2
    r = run([src, "--model", tiny_export, "--out", tmp_path / "o", "--max-iters", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "o" / "odd.png").size == (19, 13)
    rep = json.loads((tmp_path / "o" / "odd.json").read_text())
    assert rep["padded_size"] == [20, 14]


def test_corrupt_image_fails_cleanly_and_keeps_good_results(tiny_export, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    good = save(tmp_path / "good.png", smooth_image(16, 16))
    out = tmp_path / "o"
    r = run([bad, good, "--model", tiny_export, "--out", out, "--max-iters", "2", "--quiet"])
    assert r.exit_code == 1
    errors = [line for line in r.output.splitlines() if "error" in line]
    assert len(errors) == 1 and "bad.png" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["good.json", "good.png"]  # nothing half-written


def test_too_small_image_fails(tiny_export, tmp_path):
    tiny = save(tmp_path / "t.png", smooth_image(4, 30))
    r = run([tiny, "--model", tiny_export, "--out", tmp_path / "o", "--quiet"])
    assert r.exit_code == 1 and "smaller than" in r.output


def test_wrong_manifest_hash_refused(tiny_export, tmp_path):
    m = copy_export(tiny_export, tmp_path / "m")
    with open(m / "unet.onnx", "ab") as f:
        f.write(b"\0")
    png = save(tmp_path / "a.png", smooth_image(16, 16))
    r = run([png, "--model", m, "--out", tmp_path / "o", "--quiet"])
    assert r.exit_code == 2 and "does not match the manifest" in r.output
    assert not (tmp_path / "o").exists()


def test_missing_graph_refused(tiny_export, tmp_path):
    m = copy_export(tiny_export, tmp_path / "m")
    (m / "unet_vjp.onnx").unlink()
    (m / "chain_exact.onnx").unlink()
    png = save(tmp_path / "a.png", smooth_image(16, 16))
    r = run([png, "--model", m, "--out", tmp_path / "o", "--quiet", "--gradient", "exact"])
    assert r.exit_code == 2 and "missing" in r.output
    assert not (tmp_path / "o").exists()


def test_missing_or_broken_manifest(tmp_path):
    png = save(tmp_path / "a.png", smooth_image(16, 16))
    r = run([png, "--model", tmp_path, "--out", tmp_path / "o"])
    assert r.exit_code == 2 and "no manifest.json" in r.output
    (tmp_path / "manifest.json").write_text("{not json")
    r = run([png, "--model", tmp_path, "--out", tmp_path / "o"])
    assert r.exit_code == 2 and "not valid JSON" in r.output


def test_fused_graph_for_another_chain_refused(tiny_export, tmp_path):
    m = copy_export(tiny_export, tmp_path / "m")
    man = json.loads((m / "manifest.json").read_text())
    man["chain"]["timesteps"] = [900, 0]
    (m / "manifest.json").write_text(json.dumps(man))
    png = save(tmp_path / "a.png", smooth_image(16, 16))
    r = run([png, "--model", m, "--out", tmp_path / "o", "--quiet"])
    assert r.exit_code == 2 and "exported for another chain" in r.output


def _nan_model(tiny_export, dst):
    """A real ONNX graph whose eps is NaN (as a broken export would give), with a
    manifest that correctly describes it."""
    import onnx
    from onnx import TensorProto, helper

    from diip_deploy.manifest import sha256_file, write_manifest

    m = copy_export(tiny_export, dst)
    sample = helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    timestep = helper.make_tensor_value_info("timestep", TensorProto.INT64, ["batch"])
    eps = helper.make_tensor_value_info("eps", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    nan = helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["sample", "nan"], ["eps"])], "nan_unet", [sample, timestep], [eps], [nan]
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), m / "unet.onnx")
    man = json.loads((m / "manifest.json").read_text())
    man["graphs"] = {"unet": {**man["graphs"]["unet"], "sha256": sha256_file(m / "unet.onnx")}}
    write_manifest(m, man)
    return m


def test_nan_loss_is_an_error_not_an_output(tiny_export, tmp_path):
    m = _nan_model(tiny_export, tmp_path / "m")
    good = save(tmp_path / "a.png", smooth_image(16, 16))
    r = run([good, "--model", m, "--out", tmp_path / "o", "--quiet", "--stop", "none"])
    assert r.exit_code == 1 and "non-finite at iteration 0" in r.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_manifest_with_impossible_schedule_refused(tiny_export, tmp_path):
    m = copy_export(tiny_export, tmp_path / "m")
    man = json.loads((m / "manifest.json").read_text())
    man["chain"]["alphas_cumprod"] = [1.0] * len(man["chain"]["alphas_cumprod"])
    (m / "manifest.json").write_text(json.dumps(man))
    png = save(tmp_path / "a.png", smooth_image(16, 16))
    r = run([png, "--model", m, "--out", tmp_path / "o", "--quiet"])
    assert r.exit_code == 2 and "alphas_cumprod" in r.output


def test_graph_onnx_runtime_cannot_load_is_one_line(tiny_export, tmp_path):
    """A file whose hash the manifest vouches for but that is no ONNX model."""
    from diip_deploy.manifest import sha256_file, write_manifest

    m = copy_export(tiny_export, tmp_path / "m")
    (m / "unet.onnx").write_bytes(b"not an onnx model")
    man = json.loads((m / "manifest.json").read_text())
    man["graphs"] = {"unet": {**man["graphs"]["unet"], "sha256": sha256_file(m / "unet.onnx")}}
    write_manifest(m, man)
    png = save(tmp_path / "a.png", smooth_image(16, 16))
    r = run([png, "--model", m, "--out", tmp_path / "o", "--quiet"])
    assert r.exit_code == 2 and "ONNX Runtime cannot load it" in r.output
    assert len([line for line in r.output.splitlines() if line.strip()]) == 1
