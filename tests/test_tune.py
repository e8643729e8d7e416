"""diip-tune: validation crops from the training split, a reproducible choice, and the
manifest defaults it writes being what diip-run uses."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import copy_export

from diip_deploy.bench.tune import validation_crops
from diip_deploy.bench.tune_cli import main as tune_main
from diip_deploy.bench.tune_scoring import candidates, choose, score


def _hist(task, input_psnr, psnr, losses, laps):
    return {
        "task": task,
        "crop": "x",
        "input_psnr": input_psnr,
        "psnr": list(psnr),
        "loss": list(losses),
        "laplacian_var": list(laps),
    }


def _synthetic():
    """Noise crops: the loss decays and flattens at k = 60, PSNR peaks at 60; SR crops: the
    loss flattens early (k = 10) while PSNR falls from the input's level after 10."""
    n = 120
    k = np.arange(n)
    noise_loss = np.where(k < 60, 0.9**k, 0.9**60)
    noise_psnr = 20 + 6 * np.minimum(k, 60) / 60 - 0.02 * np.maximum(k - 60, 0)
    sr_loss = np.where(k < 10, 0.8**k, 0.8**10 * (1 - 1e-5 * (k - 10)))
    sr_psnr = 24 - 0.02 * np.maximum(k - 10, 0)
    laps = np.linspace(0, 1, n)
    return {
        "n_per_task": 2,
        "crop_size": 16,
        "split": "test",
        "settings": {"lr": 0.05},
        "samples": [_hist("noise25", 20.0, noise_psnr, noise_loss, laps) for _ in range(2)]
        + [_hist("sr4", 24.0, sr_psnr, sr_loss, laps) for _ in range(2)],
    }


def test_score_applies_the_rule_to_each_history():
    h = _synthetic()
    sc = score(h, {"stop": "slope", "eps": 1e-3, "slope_window": 5, "k_min": 50})
    assert sc["noise25"]["stop"] == 65 and sc["sr4"]["stop"] == 15  # 5 flat steps after each plateau starts
    assert sc["noise25"]["input"] == 20.0 and sc["noise25"]["oracle"] == pytest.approx(26.0)


def test_choice_is_admissible_and_reproducible():
    h = _synthetic()
    a, b = choose(h, 0.2), choose(json.loads(json.dumps(h)), 0.2)
    assert a == b and a["admissible"]
    assert all(t["auto"] - t["input"] >= -0.2 for t in a["scores"].values())
    assert a["scores"]["noise25"]["auto"] > 25.5  # it keeps most of the noise gain
    # a later slope stop would gain nothing on noise and lose SR's input level: not chosen
    assert a["settings"]["slope_min_iter"] < 40 or a["settings"]["stop"] == "laplacian"


def test_candidates_skip_settings_a_mode_never_reads():
    cs = list(candidates())
    lap = [c for c in cs if c["stop"] == "laplacian"]
    assert len(lap) == 6 and len({tuple(sorted(c.items())) for c in cs}) == len(cs)


def test_validation_crops_come_from_training_photos_only():
    from diip_deploy.train.photos import HELD_OUT

    crops = validation_crops(6, 32, seed=1)
    assert len(crops) == 6 and all(c.shape == (32, 32, 3) for _, c in crops)
    assert not {name.split("@")[0] for name, _ in crops} & set(HELD_OUT)
    assert {name.split("@")[1].split(":")[0] for name, _ in crops} == {"1.0", "0.5", "0.25"}


def test_written_defaults_are_what_diip_run_uses(tiny_export, tmp_path):
    from images import save, smooth_image

    from diip_deploy.runtime.commands.cli import main as diip_run

    m = copy_export(tiny_export, tmp_path / "m")
    hist = tmp_path / "h.json"
    r = CliRunner().invoke(
        tune_main,
        [
            "record",
            "--export",
            str(m),
            "--n",
            "2",
            "--size",
            "16",
            "--task",
            "noise25",
            "--max-iters",
            "8",
            "--out",
            str(hist),
        ],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    assert len(json.loads(hist.read_text())["samples"]) == 2
    r = CliRunner().invoke(tune_main, ["choose", "--histories", str(hist), "--write", str(m)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    man = json.loads((m / "manifest.json").read_text())
    d, v = man["defaults"], man["validation"]
    assert v["tool"] == "diip-tune" and "noise25" in v["scores"]
    # change one default by hand so the test can tell manifest values from built-in ones
    d["patience"], d["slope_min_iter"] = 2, 3
    (m / "manifest.json").write_text(json.dumps(man))
    png = save(tmp_path / "a.png", smooth_image(16, 16))
    r = CliRunner().invoke(diip_run, [str(png), "--model", str(m), "--out", str(tmp_path / "o"), "--quiet"])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "o" / "a.json").read_text())["settings"]
    assert (s["stop"], s["eps"], s["slope_window"], s["k_min"], s["patience"], s["slope_min_iter"]) == (
        d["stop"],
        d["eps"],
        d["slope_window"],
        d["k_min"],
        2,
        3,
    )
    r = CliRunner().invoke(
        diip_run, [str(png), "--model", str(m), "--out", str(tmp_path / "o2"), "--quiet", "--patience", "4"]
    )
    assert json.loads((tmp_path / "o2" / "a.json").read_text())["settings"]["patience"] == 4


def test_record_takes_steps_per_eval_from_the_command_line(tiny_export, tmp_path):
    """--steps-per-eval reaches the recorded runs (their settings and their trajectory), and
    a value the setting's own rule refuses is a usage error."""
    runs = {}
    for n in (1, 3):
        hist = tmp_path / f"h{n}.json"
        args = ["record", "--export", str(tiny_export), "--n", "1", "--size", "16", "--task", "noise25"]
        r = CliRunner().invoke(
            tune_main,
            [*args, "--max-iters", "4", "--steps-per-eval", str(n), "--out", str(hist)],
            catch_exceptions=False,
        )
        assert r.exit_code == 0, r.output
        runs[n] = json.loads(hist.read_text())
    assert runs[1]["settings"]["steps_per_eval"] == 1 and runs[3]["settings"]["steps_per_eval"] == 3
    one, three = runs[1]["samples"][0]["loss"], runs[3]["samples"][0]["loss"]
    assert one[0] == pytest.approx(three[0]) and three[-1] != pytest.approx(one[-1])  # same start, other steps
    r = CliRunner().invoke(tune_main, [*args, "--steps-per-eval", "0", "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "steps-per-eval" in r.output and not (tmp_path / "x.json").exists()


def test_choose_refuses_held_out_histories(tmp_path):
    h = {**_synthetic(), "split": "HELD-OUT photos: for reporting only, never for choosing"}
    f = tmp_path / "held.json"
    f.write_text(json.dumps(h))
    r = CliRunner().invoke(tune_main, ["choose", "--histories", str(f)])
    assert r.exit_code == 2 and "held-out" in r.output


def test_undamaged_crops_are_left_out_of_the_means():
    """A flat crop JPEG leaves exact has an infinite input PSNR; it must not make the mean inf."""
    h = _synthetic()
    flat = _hist("sr4", float("inf"), [60.0] * 120, [1e-9] * 120, np.linspace(0, 1, 120))
    with_flat = {**h, "samples": h["samples"] + [flat]}
    assert score(with_flat, {"stop": "slope"}) == score(h, {"stop": "slope"})


def test_classic_baselines_are_scored_on_the_recorded_crops():
    from diip_deploy.bench.degrade import TASKS
    from diip_deploy.bench.metrics import psnr
    from diip_deploy.bench.tune_scoring import classic_scores

    crops = validation_crops(2, 32, seed=0)
    samples = []
    for task in ("noise25", "sr4"):
        for i, (name, clean) in enumerate(crops):
            samples.append({**_hist(task, psnr(clean, TASKS[task](clean, seed=i)), [0.0], [1.0], [0.0]), "crop": name})
    h = {"n_per_task": 2, "crop_size": 32, "split": "training photos only", "seed": 0, "samples": samples}
    sc = classic_scores(h)
    assert set(sc["noise25"]) == {"TV", "NL-means", "wavelet"}
    noise_input = np.mean([s["input_psnr"] for s in samples[:2]])
    assert all(v > noise_input + 1 for v in sc["noise25"].values())  # denoisers do denoise
    assert sc["sr4"]["bicubic"] == pytest.approx(np.mean([s["input_psnr"] for s in samples[2:]]), abs=1e-3)
    samples[1]["crop"] = "someone/else@1.0:0,0"
    with pytest.raises(ValueError, match="crop 1"):
        classic_scores(h)


def test_paper_auto_is_scored_with_the_papers_thresholds(tiny_export, tmp_path):
    """diip-tune score's paper-auto column uses eps 1e-3 and k_min 100 whatever the
    manifest's own thresholds are."""
    from diip_deploy.runtime.optimise.stopping import PAPER_SETTINGS

    assert PAPER_SETTINGS == {"stop": "paper-auto", "eps": 1e-3, "k_min": 100}  # the published values (docs/method.md)
    k = np.arange(120)
    loss = np.cumprod(np.where(k < 60, 1 - 5e-3, 1 - 5e-4))  # raw slope 5e-3, then 5e-4: eps decides
    h = {**_synthetic(), "samples": [_hist("noise25", 20.0, 20 + k / 20, loss, np.linspace(0, 1, 120))]}
    path = tmp_path / "h.json"
    path.write_text(json.dumps(h))
    from diip_deploy.manifest import read_data, set_defaults, write_manifest

    export = copy_export(tiny_export, tmp_path / "export")
    data = read_data(export)
    set_defaults(data, {"max_iters": 120})  # the cap ends a scored run too: the tiny export's 12 would
    write_manifest(export, data)
    r = CliRunner().invoke(tune_main, ["score", "--histories", str(path), "--export", str(export)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["paper_auto"] == score(h, {"stop": "paper-auto", "eps": 1e-3, "k_min": 100, "max_iters": 120})
    assert out["paper_auto"]["noise25"]["stop"] == 60  # eps 1e-3: the first slope under it
    assert score(h, {"stop": "paper-auto", "eps": 1e-3, "k_min": 100, "max_iters": 12})["noise25"]["stop"] == 11
    assert out["manifest_defaults"] != out["paper_auto"]


def test_score_returns_the_input_where_the_guard_reverts():
    """With recorded residual correlations, ``returned`` is what diip-run hands back: the
    input where the guard reverts (after the stop, or early at guard_at), the stop's PSNR
    elsewhere."""
    h = _synthetic()
    for s in h["samples"]:
        s["correlation"] = [0.9 if s["task"] == "sr4" else 0.1] * len(s["psnr"])
    rule = {"stop": "slope", "eps": 1e-3, "slope_window": 5, "k_min": 50, "residual_guard": 0.5, "guard_at": 20}
    sc = score(h, rule)
    assert sc["sr4"]["returned"] == sc["sr4"]["input"] == 24.0 and sc["sr4"]["reverted"] == 2
    assert (sc["sr4"]["stop"], sc["sr4"]["cost"]) == (15, 16)  # its stop came first: judged there
    assert score(h, {**rule, "guard_at": 10})["sr4"]["cost"] == 10  # the early guard ends it at 10
    assert sc["noise25"]["returned"] == sc["noise25"]["auto"] and sc["noise25"]["reverted"] == 0
    assert "returned" not in score(_synthetic(), rule)["noise25"]  # older histories: no guard column


def test_record_widens_to_saturated_crops_and_scores_colour_drift(tiny_export, tmp_path):
    """--saturated adds crops with saturated colours from the training photos; each iteration
    keeps the worst channel-mean error, score reports the worst crop's in what diip-run
    returns, and --clamp-gradient reaches the runs."""
    from diip_deploy.bench.saturated import HUES, channel_mean_error, recoloured
    from diip_deploy.bench.tune_scoring import score

    hist = tmp_path / "h.json"
    args = ["record", "--export", str(tiny_export), "--n", "1", "--size", "16", "--task", "noise25"]
    r = CliRunner().invoke(
        tune_main,
        [*args, "--max-iters", "3", "--saturated", "2", "--clamp-gradient", "straight", "--out", str(hist)],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    h = json.loads(hist.read_text())
    assert h["saturated"] == 2 and h["settings"]["clamp_gradient"] == "straight" and len(h["samples"]) == 3
    assert h["samples"][2]["crop"].endswith("->red") and len(h["samples"][2]["channel_mean_error"]) == 3
    scored = score(h, {"max_iters": 3, "stop": "none", "residual_guard": 1.0})
    assert scored["noise25"]["channel_mean_error_max"] == max(
        s["channel_mean_error"][2] for s in h["samples"] if np.isfinite(s["input_psnr"])
    )
    grey = np.full((8, 8, 3), 0.5) + np.linspace(0, 0.2, 8)[:, None, None]
    red = recoloured(grey, HUES["red"])
    assert red[..., 0].mean() > 2 * red[..., 1:].mean()  # a saturated red, with the crop's shading
    assert channel_mean_error(red, red) == 0 and channel_mean_error(grey, grey + 2 / 255) == pytest.approx(2)
