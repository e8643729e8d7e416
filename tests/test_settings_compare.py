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
    from diip_deploy.bench.metrics import gain_summary

    got = gain_summary([30.0, 29.0, 31.5], [29.5, 29.5, 31.0])
    assert got["gain_db"] == pytest.approx(1.0 / 6, abs=1e-3) and got["won"] == 2 and got["of"] == 3
    assert got["stderr_db"] == pytest.approx(np.std([0.5, -0.5, 0.5], ddof=1) / np.sqrt(3), abs=1e-3)
    assert gain_summary([30.0, 29.0, 31.5], [29.5, 29.5, 31.0], digits=2)["gain_db"] == 0.17
    assert gain_summary([30.0], [29.0])["stderr_db"] == 0.0  # one crop: no spread to estimate


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


def test_replay_compare_counts_crop_for_crop_and_refuses_other_crops(tmp_path):
    """bench/replay_compare.py: a history against itself gains nothing on any crop; against
    another setting's records each task's gain is the mean of the per-crop differences; records
    of other crops, or a cap past what was recorded, are refused."""
    import json

    from replay_compare import compare, main

    from diip_deploy.bench.tune_cli import manifest_settings
    from diip_deploy.bench.tune_scoring import per_crop
    from diip_deploy.runtime import load_manifest

    studied = REPO / "bench" / "results" / "adam_beta2"
    base = json.loads((studied / "histories_seed1_b2_0.999.json").read_text())
    other = json.loads((studied / "histories_seed1_b2_0.95.json").read_text())
    rule = {**manifest_settings(load_manifest(EXPORT).data["defaults"]), "max_iters": 25}
    same = compare(base, base, rule)
    assert all(r["gain_db"] == 0.0 and r["won"] == 0 and r["returned"] == r["base_returned"] for r in same.values())
    got = compare(base, other, rule)
    a = {(c["task"], c["crop"]): c["returned"] for c in per_crop(base, rule)}
    b = {(c["task"], c["crop"]): c["returned"] for c in per_crop(other, rule)}
    for task, r in got.items():
        d = [b[k] - a[k] for k in a if k[0] == task]
        assert r["gain_db"] == pytest.approx(np.mean(d), abs=1e-3) and r["crops"] == len(d)
    shifted = {**other, "samples": other["samples"][1:]}
    with pytest.raises(SystemExit, match="different crops"):
        compare(base, shifted, rule)
    with pytest.raises(SystemExit, match="past what"):
        main(
            [
                "--base",
                str(studied / "histories_seed1_b2_0.999.json"),
                "--candidate",
                str(studied / "histories_seed1_b2_0.95.json"),
                "--caps",
                "60",
            ]
        )
    out = tmp_path / "c.json"
    main(
        [
            "--base",
            str(studied / "histories_seed1_b2_0.999.json"),
            "--candidate",
            str(studied / "histories_seed1_b2_0.95.json"),
            "--json",
            str(out),
        ]
    )
    assert json.loads(out.read_text())["candidates"]["histories_seed1_b2_0.95.json"]["by_cap"][0]["cap"] == 25


def test_gain_over_a_learning_curve_points_prior_needs_its_crops_and_noises():
    """--against-shipped-of: the gain over the prior a prior_curve.json point was measured
    beside, counted on that point's own per-crop scores; other crops or start counts refused."""
    import json

    from settings_compare import over_shipped_of

    measured = json.loads((REPO / "bench" / "results" / "adam_beta2" / "heldout_b2_0.95.json").read_text())
    got = over_shipped_of(measured, "direct-more", "4000", held_out=True)
    points = json.loads((REPO / "bench" / "results" / "prior_curve.json").read_text())["points"]
    point = next(p for p in reversed(points) if p["label"] == got["point"])
    assert got["gain_db"] == pytest.approx(np.mean(measured["psnr"]) - point["shipped_mean_psnr"], abs=2e-3)
    assert got["of"] == len(point["crops"])
    for other in ({**measured, "crops": measured["crops"][1:]}, {**measured, "start_seeds": 1}):
        with pytest.raises(SystemExit, match="other crops or starting noises"):
            over_shipped_of(other, "direct-more", "4000", held_out=True)
