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
    assert json.loads((tmp_path / "o" / "a.json").read_text())["settings"]["steps"] == 2


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
