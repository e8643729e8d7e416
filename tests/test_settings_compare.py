"""bench/settings_compare.py: the overrides reach the runtime, the base side is the export's
defaults, and the gain is counted crop for crop."""

import sys

import numpy as np
import pytest
from conftest import REPO
from images import smooth_image

sys.path.insert(0, str(REPO / "bench"))

EXPORT = REPO / "models" / "default-export"


def test_parse_sets_reads_numbers_and_words_and_refuses_the_rest():
    from settings_compare import parse_sets

    assert parse_sets(["adam_beta2=0.95", "clamp_gradient=straight", "max_iters=20"]) == {
        "adam_beta2": 0.95,
        "clamp_gradient": "straight",
        "max_iters": 20,
    }
    for bad in ("adam_beta2", "=0.9"):
        with pytest.raises(SystemExit):
            parse_sets([bad])


def test_gain_is_crop_for_crop():
    from settings_compare import gain_summary

    got = gain_summary([30.0, 29.0, 31.5], [29.5, 29.5, 31.0])
    assert got["gain_db"] == pytest.approx(1.0 / 6, abs=1e-3) and got["won"] == 2 and got["of"] == 3
    assert got["stderr_db"] == pytest.approx(np.std([0.5, -0.5, 0.5], ddof=1) / np.sqrt(3), abs=1e-3)


def test_overrides_reach_the_runtime_and_the_defaults_are_the_base():
    """Overriding a default with its own value changes nothing, bit for bit; a cap of 2
    evaluations restores less than the shipped cap, on every crop."""
    from settings_compare import compare

    from diip_deploy.runtime import load_manifest

    beta2 = load_manifest(EXPORT).defaults["adam_beta2"]
    crops = [(f"c{i}", smooth_image(64, 64, seed=i).astype(np.float32)) for i in range(2)]
    same = compare(EXPORT, crops, {}, {"adam_beta2": beta2}, seeds=1, threads=2)
    assert same["psnr"] == same["base_psnr"] and same["gain_db"] == 0.0
    short = compare(EXPORT, crops, {}, {"max_iters": 2}, seeds=1, threads=2)
    assert short["base_psnr"] == same["base_psnr"]
    assert all(s < b for s, b in zip(short["psnr"], short["base_psnr"])), short
    assert short["won"] == 0 and short["overrides"] == {"max_iters": 2}
