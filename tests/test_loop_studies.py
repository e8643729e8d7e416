"""The host-loop studies of issue 26 (bench/lr_warmup.py, bench/output_average.py,
bench/input_lowpass.py, bench/gradient_filter.py, bench/chain_timesteps.py): each changes
only what it says, on the same crops and starts as the unchanged loop, so that their
comparisons crop for crop are fair."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _study(script, export, *args, fails=False):
    common = ["--export", str(export), "--n", "1", "--size", "16", "--max-iters", "5"]
    r = subprocess.run([sys.executable, str(BENCH / script), *common, *args], capture_output=True, text=True)
    assert (r.returncode != 0) == fails, r.stderr
    return r.stderr


def _samples(path):
    return json.loads(Path(path).read_text())["samples"]


def test_studies_change_only_what_they_study(tiny_export, tiny_pipeline, tmp_path):
    _study("output_average.py", tiny_export, "--beta", "0.5", "--out-dir", str(tmp_path))
    plain, averaged = _samples(tmp_path / "beta0_seed0.json"), _samples(tmp_path / "beta0.5_seed0.json")
    assert len(plain) == 2  # one ordinary crop and one saturated one
    for p, a in zip(plain, averaged):
        assert a["loss"] == p["loss"]  # the same trajectory: only the judged image is averaged
        assert a["psnr"][0] == p["psnr"][0]  # an average of one output is that output
        assert a["psnr"][1:] != p["psnr"][1:]

    lows = tmp_path / "lowpass"
    _study("input_lowpass.py", tiny_export, "--sigma", "2", "inf", "--out-dir", str(lows))
    for p, own, wide, mean in zip(
        plain, *(_samples(lows / f"sigma{s}_seed0.json") for s in ("0", "2", "inf")), strict=True
    ):
        assert own["loss"] == p["loss"] and own["psnr"] == p["psnr"]  # the unchanged loop, as recorded
        assert wide["loss"] == p["loss"] and mean["loss"] == p["loss"]  # only the judged image changes
        assert wide["psnr"] != p["psnr"] and mean["psnr"] != p["psnr"]

    _study("lr_warmup.py", tiny_export, "--start", "1", "--evaluations", "3", "--out", str(tmp_path / "flat.json"))
    _study("lr_warmup.py", tiny_export, "--start", "0.3", "--evaluations", "3", "--out", str(tmp_path / "warm.json"))
    flat, warm = _samples(tmp_path / "flat.json"), _samples(tmp_path / "warm.json")
    for p, f, w in zip(plain, flat, warm):
        np.testing.assert_allclose(f["loss"], p["loss"], rtol=1e-6)  # a warm-up from 1 is the constant rate
        assert w["loss"][0] == p["loss"][0]  # the same start, judged before any step
        assert not np.allclose(w["loss"][1:], p["loss"][1:], rtol=1e-6)

    _study("gradient_filter.py", tiny_export, "--boost", "0", "--out", str(tmp_path / "none.json"))
    _study("gradient_filter.py", tiny_export, "--boost", "3", "--out", str(tmp_path / "dc.json"))
    for p, n, b in zip(plain, _samples(tmp_path / "none.json"), _samples(tmp_path / "dc.json")):
        np.testing.assert_allclose(n["loss"], p["loss"], rtol=1e-6)  # no boost: the shipped gradient
        assert b["loss"][0] == p["loss"][0] and not np.allclose(b["loss"][1:], p["loss"][1:], rtol=1e-6)

    # the export's own timesteps are the unchanged loop (on the per-step graph, where the
    # tiny export's runs take its fused one); another spacing, another trajectory
    own = ",".join(map(str, json.loads((tiny_export / "manifest.json").read_text())["chain"]["timesteps"]))
    model = ["--model", str(tiny_pipeline)]
    _study("chain_timesteps.py", tiny_export, *model, "--timesteps", own, "--out", str(tmp_path / "own.json"))
    _study("chain_timesteps.py", tiny_export, *model, "--timesteps", "700,20", "--out", str(tmp_path / "spaced.json"))
    for p, o, s in zip(plain, _samples(tmp_path / "own.json"), _samples(tmp_path / "spaced.json")):
        np.testing.assert_allclose(o["loss"], p["loss"], rtol=1e-5)
        assert abs(s["loss"][0] - p["loss"][0]) > 1e-3 * p["loss"][0]
    bad = ["--timesteps", "0,700", "--out", str(tmp_path / "b")]
    err = _study("chain_timesteps.py", tiny_export, *model, *bad, fails=True)
    assert "fall strictly" in err and not (tmp_path / "b").exists()


def test_lowpass_study_blur_is_scipys_gaussian():
    """The study's blur is scipy's Gaussian (reflected borders, cut at 3 sigma), also where
    the kernel is wider than the image; sigma inf is each channel's mean, and the corrected
    image takes the damaged one's means and keeps its own detail."""
    import importlib.util

    from scipy.ndimage import gaussian_filter

    spec = importlib.util.spec_from_file_location("input_lowpass", BENCH / "input_lowpass.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    x = np.random.default_rng(0).random((3, 20, 13))
    for sigma in (1.0, 4.0, 9.0):
        want = gaussian_filter(x, (0, sigma, sigma), mode="reflect", truncate=3.0)
        np.testing.assert_allclose(study.gaussian_blur(x, sigma), want, atol=1e-12)
    np.testing.assert_allclose(study.gaussian_blur(x, np.inf), x.mean(axis=(1, 2), keepdims=True) + 0 * x)
    restored = x - 0.5  # well inside [-1, 1], so the final clip does nothing
    damaged = restored + 0.2 + 0.1 * np.random.default_rng(1).standard_normal(x.shape)
    fixed = study.take_low_frequencies(restored, damaged, np.inf)
    np.testing.assert_allclose(fixed.mean(axis=(1, 2)), damaged.mean(axis=(1, 2)), atol=1e-12)
    np.testing.assert_allclose(
        fixed - fixed.mean(axis=(1, 2), keepdims=True), restored - restored.mean(axis=(1, 2), keepdims=True)
    )
