"""diip-export --timesteps: a chain at its own spacing, not DDIM's leading one.  The
manifest records it, the graphs that bake the chain in are verified against torch at it,
the host loop and the fused chain agree on it, and diip-run restores with it."""

import json

import numpy as np
from click.testing import CliRunner
from conftest import copy_export
from images import save, smooth_image

from diip_deploy.export.cli import main as diip_export
from diip_deploy.manifest import load_manifest
from diip_deploy.runtime.backends.select import open_chain
from diip_deploy.runtime.commands.cli import main as diip_run
from diip_deploy.runtime.optimise.optim import project_to_sphere

SPACING = [700, 20]  # the tiny export's leading spacing of 2 steps is 500, 0


def _export(tiny_pipeline, out, *args):
    return CliRunner().invoke(
        diip_export,
        [str(tiny_pipeline), "--out", str(out), "--gradient", "surrogate", "--fused", "surrogate", *args],
        catch_exceptions=False,
    )


def test_an_export_at_its_own_timesteps(tiny_pipeline, tiny_export, tmp_path):
    from diip_deploy.export.loading import load_model

    out = tmp_path / "spaced"
    r = _export(tiny_pipeline, out, "--timesteps", ",".join(map(str, SPACING)), "--iterate", "surrogate")
    assert r.exit_code == 0, r.output
    man = json.loads((out / "manifest.json").read_text())
    table = load_model(str(tiny_pipeline)).alphas_cumprod
    assert man["chain"]["steps"] == 2 and man["chain"]["timesteps"] == SPACING
    assert man["chain"]["alphas_cumprod"] == [table[t] for t in SPACING]
    for name in ("chain_surrogate", "iterate_surrogate"):
        assert man["graphs"][name]["chain"]["timesteps"] == SPACING and man["verification"][name]["passed"]

    # the host loop (per-step UNet graph, the chain from the manifest) and the fused graph
    # that baked the spacing in compute the same loss and gradient
    m = load_manifest(out)
    host = open_chain(m, "ort-cpu", "surrogate", 1, prefer_fused=False)
    fused = open_chain(m, "ort-cpu", "surrogate", 1, prefer_fused=True)
    assert "chain_surrogate" in fused.runners and "chain_surrogate" not in host.runners
    rng = np.random.default_rng(0)
    y = np.clip(rng.standard_normal((2, 3, 16, 16)) * 0.5, -1, 1).astype(np.float32)
    z = project_to_sphere(rng.standard_normal(y.shape).astype(np.float32))
    want, got = host.loss_and_grad(z, y), fused.loss_and_grad(z, y)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)

    # ... and differ from the leading spacing's chain of the same length
    other = open_chain(load_manifest(tiny_export), "ort-cpu", "surrogate", 1, prefer_fused=False)
    assert list(other.spec.timesteps) == [500, 0]
    assert not np.allclose(other.loss_and_grad(z, y)[1], want[1])

    png = save(tmp_path / "a.png", smooth_image(16, 16))
    r = CliRunner().invoke(
        diip_run, [str(png), "--model", str(out), "--out", str(tmp_path / "o"), "--quiet", "--max-iters", "3"]
    )
    assert r.exit_code == 0, r.output
    settings = json.loads((tmp_path / "o" / "a.json").read_text())["settings"]
    assert settings["steps"] == 2 and settings["timesteps"] == SPACING


def test_bad_timesteps_are_one_line_errors(tiny_pipeline, tmp_path):
    for bad, why in (("300,700", "fall strictly"), ("700,x", "integers"), ("2000,0", "fall strictly")):
        r = _export(tiny_pipeline, tmp_path / "x", "--timesteps", bad)
        assert r.exit_code != 0 and why in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_add_keeps_to_the_exports_spacing(tiny_pipeline, tiny_export, tmp_path):
    """--add extends an export of the same chain only: the tiny export's leading spacing
    named by its timesteps is that chain; another spacing of the same length is not."""
    out = copy_export(tiny_export, tmp_path / "x")
    before = json.loads((out / "manifest.json").read_text())
    r = _export(tiny_pipeline, out, "--timesteps", "700,0", "--add", "--no-verify")
    assert r.exit_code != 0 and "another chain" in r.output
    r = _export(tiny_pipeline, out, "--timesteps", ",".join(map(str, before["chain"]["timesteps"])), "--add")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "manifest.json").read_text())["chain"] == before["chain"]


def test_rechain_moves_an_export_and_marks_what_was_measured_before(tiny_pipeline, tiny_export, tmp_path):
    """--add --rechain: the per-step graphs, defaults and records stay, each record marked
    with the chain it was measured on; the old baked graphs leave (files included), those
    asked for come back traced and verified at the new chain; a bf16 check made on the old
    chain no longer counts."""
    from diip_deploy.manifest import write_manifest
    from diip_deploy.runtime.backends.cpu_variants import unverified_reason

    out = copy_export(tiny_export, tmp_path / "x")
    data = json.loads((out / "manifest.json").read_text())
    data["validation"] = {
        "tool": "diip-tune",
        "scores": {"noise25": {"auto": 20.0}},
        "few_evals": {"tool": "bench/few_evals.py", "adopted": {"lr": 0.02}},
    }
    data["variants"] = {"openvino-bf16": {"passed": True, "defaults": data["defaults"]}}
    write_manifest(out, data)
    assert unverified_reason(load_manifest(out), "openvino-bf16") is None

    r = _export(tiny_pipeline, out, "--timesteps", "700,20", "--add")
    assert r.exit_code != 0 and "--rechain" in r.output
    r = _export(tiny_pipeline, out, "--timesteps", "700,20", "--rechain")
    assert r.exit_code != 0 and "with --add" in r.output
    r = _export(tiny_pipeline, out, "--timesteps", "700,20", "--add", "--rechain")
    assert r.exit_code == 0, r.output

    after = json.loads((out / "manifest.json").read_text())
    assert after["chain"]["timesteps"] == [700, 20] and after["chain"]["steps"] == 2
    assert after["defaults"] == data["defaults"]
    for name in ("unet", "unet_vjp"):
        assert after["graphs"][name] == data["graphs"][name]
    assert set(after["graphs"]) == {"unet", "unet_vjp", "chain_surrogate"}
    assert after["graphs"]["chain_surrogate"]["chain"]["timesteps"] == [700, 20]
    assert after["verification"]["chain_surrogate"]["passed"] and "chain_exact" not in after["verification"]
    assert not (out / data["graphs"]["chain_exact"]["file"]).exists()
    assert not (out / data["graphs"]["iterate_surrogate"]["file"]).exists()
    assert after["validation"]["few_evals"]["chain_timesteps"] == [500, 0]
    assert after["validation"]["chain_timesteps"] == [500, 0]  # the diip-tune record itself
    assert after["validation"]["scores"] == {"noise25": {"auto": 20.0}}  # a table of tasks, not a record
    assert "not verified on this export's chain" in unverified_reason(load_manifest(out), "openvino-bf16")


def test_carry_from_takes_defaults_and_marks_records_with_the_weights_they_measured(
    tiny_pipeline, tiny_export, tmp_path
):
    """--carry-from: a fresh export of other weights takes the old export's tuned defaults
    and records, each record marked with the weights (and the chain, where it moved) it was
    measured on, and its tiling, leaves its variant checks behind, and runs on its own
    verified graphs."""
    from tiny_model import make_tiny_pipeline

    from diip_deploy.export.loading import load_model
    from diip_deploy.manifest import write_manifest

    old = copy_export(tiny_export, tmp_path / "old")
    data = json.loads((old / "manifest.json").read_text())
    data["defaults"] = {**data["defaults"], "lr": 0.05, "max_iters": 9, "clamp_gradient": "straight"}
    data["validation"] = {
        "tool": "diip-tune",
        "scores": {"noise25": {"auto": 20.0}},
        "few_evals": {"tool": "bench/few_evals.py", "adopted": {"lr": 0.05}},
        "residual_guard": {"tool": "bench/guard.py", "chosen": 0.5, "weights_sha256": "earlier"},
    }
    data["variants"] = {"openvino-bf16": {"passed": True, "defaults": data["defaults"]}}
    data["tiling"] = {"tile_size": 24, "max_tile_pixels": 9999}
    write_manifest(old, data)
    other = make_tiny_pipeline(tmp_path / "other", seed=3)
    r = _export(other, tmp_path / "x", "--add", "--carry-from", str(old))
    assert r.exit_code != 0 and "not with --add" in r.output

    r = _export(other, tmp_path / "new", "--timesteps", "700,20", "--carry-from", str(old))
    assert r.exit_code == 0, r.output
    new = load_manifest(tmp_path / "new")
    made = new.data["model"]["weights_sha256"]
    assert made == load_model(str(other)).weights_sha256 != data["model"]["weights_sha256"]
    assert (new.defaults["lr"], new.defaults["max_iters"], new.defaults["clamp_gradient"]) == (0.05, 9, "straight")
    assert new.data["graphs"]["chain_surrogate"]["clamp_gradient"] == "straight" and all(
        v["passed"] for v in new.data["verification"].values()
    )
    v = new.data["validation"]
    for record in (v, v["few_evals"]):
        assert record["weights_sha256"] == data["model"]["weights_sha256"] and record["chain_timesteps"] == [500, 0]
    assert v["scores"] == {"noise25": {"auto": 20.0}}  # a table of tasks, not a record
    assert v["residual_guard"]["weights_sha256"] == "earlier"  # its own mark kept
    assert "variants" not in new.data or not new.data["variants"]
    assert new.data["tiling"] == {"tile_size": 24, "max_tile_pixels": 9999}  # the runtime's tile, as tuned
    r = _export(other, tmp_path / "none", "--carry-from", str(tmp_path / "other"))
    assert r.exit_code != 0 and "--carry-from: no readable export" in r.output.strip().splitlines()[-1]
