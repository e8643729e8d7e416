"""The shipped default model: it loads, its export is the one its manifest describes,
it exports again, and it restores a held-out example."""

import json

import numpy as np
from click.testing import CliRunner
from conftest import REPO

MODEL = REPO / "models" / "default"
EXPORT = REPO / "models" / "default-export"


def test_loads_as_a_ddpm_pipeline():
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(str(MODEL))
    assert type(pipe.unet).__name__ == "UNet2DModel"
    assert pipe.scheduler.config.prediction_type == "epsilon"
    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert size <= 25 * 2**20, f"models/default is {size / 2**20:.1f} MB"


def test_shipped_export_matches_its_manifest_and_weights():
    from diip_deploy.export.loading import load_model
    from diip_deploy.runtime import load_manifest

    m = load_manifest(EXPORT)  # checks every graph's sha256
    assert m.data["model"]["weights_sha256"] == load_model(str(MODEL)).weights_sha256
    assert all(v["passed"] for v in m.data["verification"].values())


def test_exports_and_round_trips(tmp_path):
    """A fresh 2-step export of the shipped weights agrees with the torch reference."""
    import torch

    from diip_deploy.export.loading import load_model
    from diip_deploy.export.pipeline import export_model
    from diip_deploy.export.reference import EpsModel, loss_and_grad
    from diip_deploy.export.trace import prepare_unet
    from diip_deploy.export.verify import rel_l2
    from diip_deploy.runtime import load_manifest, open_chain

    export_model(str(MODEL), tmp_path, steps=2, gradient="surrogate", verify=True, log=lambda m: None)
    manifest = load_manifest(tmp_path)
    loaded = load_model(str(MODEL))
    eps_model = EpsModel(prepare_unet(loaded.unet), loaded.alphas_cumprod, "epsilon").eval()
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    y = rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    x0, loss, grad = open_chain(manifest, "ort-cpu", "surrogate").loss_and_grad(z, y)
    x0_t, loss_t, grad_t = loss_and_grad(
        eps_model, torch.from_numpy(z), torch.from_numpy(y), manifest.chain_spec, "surrogate"
    )
    assert rel_l2(x0, x0_t.numpy()) <= 1e-4 and rel_l2(grad, grad_t.numpy()) <= 1e-4


def test_restores_a_noisy_held_out_photo(tmp_path):
    """Default settings on a held-out 64x64 crop with noise sigma 25/255: the output is
    closer to the clean photo than the input was."""
    from diip_deploy.bench.metrics import psnr
    from diip_deploy.runtime.commands.cli import main as diip_run
    from diip_deploy.runtime.images.codec import load_image

    noisy = REPO / "examples" / "chelsea_noise25.png"
    r = CliRunner().invoke(diip_run, [str(noisy), "--model", str(EXPORT), "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    clean = load_image(REPO / "examples" / "clean" / "chelsea.png")
    before, after = psnr(clean, load_image(noisy)), psnr(clean, load_image(tmp_path / "chelsea_noise25.png"))
    rep = json.loads((tmp_path / "chelsea_noise25.json").read_text())
    assert after > before + 2.0, (before, after, rep["stop_iteration"], rep["stop_reason"])


def test_shipped_speed_defaults_are_the_ones_their_scores_chose():
    """Every default the CPU work changed is in the manifest with the scores that chose it,
    and a reduced-precision variant it lists as passed is within its tolerance."""
    from diip_deploy.runtime import load_manifest
    from diip_deploy.runtime.images.tiling import plan_tiles

    m = load_manifest(EXPORT)
    chosen = m.data["validation"]["cpu_speed"]
    # issue 26's choice (bench/few_evals.py) supersedes the CPU work's lr and cap
    few = m.data["validation"]["few_evals"]
    for name, value in few["adopted"].items():
        assert m.defaults[name] == value, name
    assert "training photos" in few["split"] and few["saturated_per_task"] >= 8
    assert few["chain_timesteps"] == m.data["chain"]["timesteps"]  # measured on the chain it ships
    shipped_weights = m.data["model"]["weights_sha256"]
    # the carried diip-tune record names what it measured; its table holds tasks alone
    assert m.data["validation"]["weights_sha256"] != shipped_weights and m.data["validation"]["chain_timesteps"]
    assert set(m.data["validation"]["scores"]) <= {"noise25", "jpeg10", "sr4", "waterdrop"}
    assert few.get("weights_sha256", shipped_weights) == shipped_weights  # and on the weights it ships
    accepted = few.get("accepted_losses", {})  # a loss is only ever a recorded, reasoned choice
    for task, scores in few["scores"].items():
        loss = few["previous_defaults_scores"][task]["returned"] - scores["returned"]
        if task in accepted:
            assert accepted[task]["why"] and abs(accepted[task]["loss_db"] - loss) < 1e-3, task
        else:
            assert loss <= 0.05, task
    for name in ("tile_overlap", "guard_at"):
        assert m.defaults[name] == chosen[name]["chosen"], name
    assert "training photos" in chosen["split"]
    # the optimiser study (lr, Adam's betas, cap): its crop pick, and whether it was adopted
    optimiser = chosen["optimiser"]
    assert "training photos" in optimiser["split"]
    pick = optimiser["crop_choice"]
    name = f"{pick['lr']:g}/{pick['adam_beta1']:g}/{pick['adam_beta2']:g}"
    scores = optimiser["auto_psnr"][name][str(pick["max_iters"])]
    reference = optimiser["auto_psnr"]["0.03/0.9/0.999"][str(optimiser["reference"]["max_iters"])]
    assert scores["noise25"] >= reference["noise25"] - 0.05
    shipped = pick if optimiser["adopted"] else optimiser["reference"]
    for key in ("adam_beta1", "adam_beta2"):  # unless issue 26's choice adopted its own betas
        assert m.defaults[key] == few["adopted"].get(key, shipped[key]), key
    assert len(plan_tiles(384, 512, m.tile_size, m.defaults["tile_overlap"])) == 63
    # Adam steps per evaluation, and the cap in evaluations its region rule chose
    steps = chosen["steps_per_eval"]
    assert m.defaults["steps_per_eval"] == steps["steps_per_eval"] and "training photos" in steps["split"]
    cap = steps["max_iters"]["chosen"]
    assert steps["max_iters"]["noise25_psnr_by_cap"][str(cap)] >= steps["reference"]["noise25_psnr"] - 0.1
    for name, record in m.data.get("variants", {}).items():
        assert record["passed"] == (record["worst_loss_db"] <= record["tolerance_db"] and record["native"]), name
        assert all(t["delta_db"] >= -record["tolerance_db"] for t in record["tasks"].values()) == record["passed"]
        assert "training photos" in record["split"] and record["crops_per_task"] >= 8


def test_learning_curve_plot_draws_the_recorded_runs(tmp_path):
    """bench/plot_prior_curve.py: one line per training run measured under the shipped
    defaults, each point as its gain over the shipped prior in the same run, validation and
    held-out crops apart (a run with held-out points alone is drawn too); points under other
    defaults are left out."""
    import json
    import subprocess
    import sys

    base = {"task": "noise25 (lr 0.1, cap 30, --clamp-gradient straight)", "split": "training photos"}
    points = [
        dict(base, label="a (x)", cpu_hours=1.0, mean_psnr=28.0, shipped_mean_psnr=29.0),
        dict(base, label="a (y), 3 seeds", cpu_hours=2.0, mean_psnr=29.5, shipped_mean_psnr=29.25),
        dict(base, label="a (z), held out", cpu_hours=2.0, mean_psnr=1.0, shipped_mean_psnr=0.0, split="HELD-OUT"),
        dict(base, label="b (old)", cpu_hours=3.0, mean_psnr=1.0, shipped_mean_psnr=0.0, task="noise25, mask"),
        dict(base, label="c (w), held out", cpu_hours=4.0, mean_psnr=2.0, shipped_mean_psnr=1.5, split="HELD-OUT"),
        dict(
            base,
            label="d (v), held out",
            cpu_hours=5.0,
            mean_psnr=29.2,
            shipped_mean_psnr=29.0,
            split="HELD-OUT",
            task="noise25 (lr 0.1, cap 25, --clamp-gradient straight, timesteps 700,450,250,100,20)",
            nlmeans_mean_psnr=28.15,
        ),
        dict(
            base,
            label="e (u), held out",
            cpu_hours=6.0,
            mean_psnr=29.4,
            shipped_mean_psnr=29.35,
            split="HELD-OUT",
            task="noise25 (lr 0.1, cap 25, --clamp-gradient straight, timesteps 700,450,250,100,20, "
            "adam betas 0.9/0.95)",
        ),
    ]
    (tmp_path / "curve.json").write_text(json.dumps({"points": points}))
    out = tmp_path / "curve.png"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "plot_prior_curve.py"),
            "--json",
            str(tmp_path / "curve.json"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    drawn = json.loads(done.stdout)
    assert drawn["runs"] == {"a": [[1.0, -1.0], [2.0, 0.25]]}
    assert drawn["held_out"] == {"a": [[2.0, 1.0]], "c": [[4.0, 0.5]]}  # c: a run measured only held out
    assert drawn["legend"] == ["a", "a: held-out crops", "c: held-out crops", "shipped prior"]
    assert drawn["current_chain"] == {"d": [[5.0, 29.2]]}  # a later chain: its own panel, in PSNR; e: other betas
    assert drawn["current_chain_beta2_0.95"] == {"e": [[6.0, 29.4]]}  # e: drawn apart, as its own curve
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_learning_curve_points_appended_at_once_all_land(tmp_path):
    """bench/prior_curve.py appends under a lock and writes by rename: two measurements that
    finish together (as two checkpoints measured side by side do) both keep their point."""
    import json
    import subprocess
    import sys

    curve = tmp_path / "curve.json"
    append = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; from prior_curve import append_point; "
        "[append_point(Path(sys.argv[2]), {'label': sys.argv[3], 'i': i}) for i in range(40)]"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", append, str(REPO / "bench"), str(curve), name]) for name in "abcd"
    ]
    assert all(w.wait(timeout=120) == 0 for w in writers)
    points = json.loads(curve.read_text())["points"]
    assert sorted((p["label"], p["i"]) for p in points) == [(n, i) for n in "abcd" for i in range(40)]
    assert not list(tmp_path.glob(".curve.json.*.tmp"))


def test_prior_compare_pairs_crops_and_refuses_other_crops(tmp_path):
    """bench/prior_compare.py: the gain of one learning-curve point over another, crop for
    crop, and a refusal where the two were measured on other crops."""
    import json
    import subprocess
    import sys

    base = {"split": "HELD-OUT photos", "start_seeds": 3, "crops": ["x", "y", "z"]}
    points = [
        dict(base, label="a (first)", step=10, mean_psnr=28.0, psnr=[27.0, 28.0, 29.0]),
        dict(base, label="b (second)", step=20, mean_psnr=28.5, psnr=[27.5, 28.0, 30.0]),
        dict(base, label="c (other crops)", step=20, mean_psnr=28.5, psnr=[1.0, 2.0, 3.0], crops=["p", "q", "r"]),
    ]
    (tmp_path / "curve.json").write_text(json.dumps({"points": points}))

    def run(*args):
        tool = [sys.executable, str(REPO / "bench" / "prior_compare.py"), "--json", str(tmp_path / "curve.json")]
        return subprocess.run([*tool, "--held-out", *args], capture_output=True, text=True)

    done = run("--a", "a", "10", "--b", "b", "20")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["gain_db"] == 0.5 and result["b_wins"] == 2 and result["crops"] == 3
    assert result["gain_range"] == [0.0, 1.0]
    refused = run("--a", "a", "10", "--b", "c", "20")
    assert refused.returncode != 0 and "other crops" in refused.stderr
    missing = run("--a", "a", "11", "--b", "b", "20")
    assert missing.returncode != 0 and "no point of 'a' at step 11" in missing.stderr


def test_prior_curve_scores_nlmeans_on_the_same_noisy_crops():
    """bench/prior_curve.py puts non-local means beside DIIP on the very inputs both priors
    get: each crop's own noise, and the filter lifts it well above the noisy input."""
    import sys

    from images import smooth_image

    sys.path.insert(0, str(REPO / "bench"))
    from prior_curve import nlmeans_crops, noisy

    from diip_deploy.bench.metrics import psnr

    crops = [(f"c{i}", smooth_image(64, 64, seed=i).astype(np.float32)) for i in range(2)]
    ys = noisy(crops)
    assert not np.array_equal(ys[0] - crops[0][1], ys[1] - crops[1][1])  # each crop its own noise
    assert all(np.array_equal(a, b) for a, b in zip(ys, noisy(crops)))  # the same draw each run
    scores = nlmeans_crops(crops, ys)
    inputs = [psnr(y, clean) for (_, clean), y in zip(crops, ys)]
    assert all(s > i + 5 for s, i in zip(scores, inputs)), (scores, inputs)


def test_few_evals_records_an_accepted_loss_with_its_size_and_reason():
    """bench/few_evals.py --accept-loss: the loss against the previous defaults is measured,
    not typed in, and a task or reason that is missing is refused."""
    import sys

    import pytest

    sys.path.insert(0, str(REPO / "bench"))
    from few_evals import accepted_losses

    record = {
        "scores": {"noise25": {"returned": 30.7}, "jpeg10": {"returned": 27.5}},
        "previous_defaults_scores": {"noise25": {"returned": 30.2}, "jpeg10": {"returned": 27.7}},
    }
    got = accepted_losses(record, ["jpeg10=a stronger prior for noise"])
    assert got == {"jpeg10": {"loss_db": 0.2, "why": "a stronger prior for noise"}}
    for bad in ("sr4=not in the record", "jpeg10=", "jpeg10"):
        with pytest.raises(SystemExit):
            accepted_losses(record, [bad])
