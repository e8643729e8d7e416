"""The training script runs end to end on a tiny configuration, so it cannot rot."""

import json

import numpy as np

# train()'s arguments for a run of seconds; the CLI's equivalent is TINY below
TINY_SETTINGS = dict(
    batch=2,
    patch=16,
    lr=1e-3,
    seed=0,
    channels=(8, 16),
    max_minutes=None,
    threads=1,
    ema_decay=0.9,
    checkpoint_every=2,
    opencv_doc=None,
    log=lambda m: None,
)


def test_a_few_training_steps(tmp_path):
    from diffusers import DDPMPipeline

    from diip_deploy.train.trainer import train

    out = tmp_path / "model"
    settings = TINY_SETTINGS
    info = train(out, tmp_path / "work", steps=4, **settings)
    assert info["steps"] == 4 and len(info["losses"]) == 4 and all(np.isfinite(info["losses"]))
    assert not set(info["train_photos"]) & set(info["held_out"])
    pipe = DDPMPipeline.from_pretrained(str(out))
    assert pipe.unet.config.block_out_channels == (8, 16) or list(pipe.unet.config.block_out_channels) == [8, 16]
    assert json.loads((out / "training.json").read_text())["steps"] == 4
    # resuming from the checkpoint continues the count instead of starting over
    info2 = train(out, tmp_path / "work", steps=6, resume=True, **settings)
    assert info2["steps"] == 6 and info2["losses"][:4] == info["losses"]


TINY = ["--batch", "2", "--patch", "16", "--lr", "1e-3", "--channels", "8,16", "--threads", "1", "--ema-decay", "0.9"]


def _train_cli(tmp_path, name, *extra):
    import subprocess
    import sys

    args = [sys.executable, "-m", "diip_deploy.train.trainer", "--out", str(tmp_path / name), *TINY, *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _weights(folder):
    from safetensors.numpy import load_file

    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_a_run_killed_mid_way_resumes_bit_identical(tmp_path):
    """kill -9 at an arbitrary moment after the first checkpoint (possibly mid-write of the
    next), then --resume: the final EMA weights equal an uninterrupted run's, bit for bit
    (same device, one thread)."""
    import signal
    import time

    steps = ["--steps", "60", "--checkpoint-every", "5"]
    whole = _train_cli(tmp_path, "whole", "--work", str(tmp_path / "w1"), *steps)
    assert whole.wait(timeout=300) == 0, whole.stderr.read()

    killed = _train_cli(tmp_path, "killed", "--work", str(tmp_path / "w2"), *steps)
    ckpt = tmp_path / "w2" / "train_state.ckpt"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere between checkpoints, or inside the next write
    assert killed.poll() is None, "the run ended before it could be killed: make it longer"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "training.json").exists()

    resumed = _train_cli(tmp_path, "killed", "--work", str(tmp_path / "w2"), "--resume", *steps)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resumed at step" in err and "resumed at step 0" not in err
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    done = json.loads((tmp_path / "killed" / "training.json").read_text())
    assert done["losses"] == json.loads((tmp_path / "whole" / "training.json").read_text())["losses"]


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    first = _train_cli(tmp_path, "m", "--work", str(tmp_path / "w"), "--steps", "2")
    assert first.wait(timeout=300) == 0
    again = _train_cli(tmp_path, "m", "--work", str(tmp_path / "w"), "--steps", "4")
    _, err = again.communicate(timeout=300)
    assert again.returncode != 0 and "pass --resume" in err
    other = _train_cli(tmp_path, "m", "--work", str(tmp_path / "w"), "--steps", "4", "--resume", "--seed", "1")
    _, err = other.communicate(timeout=300)
    assert other.returncode != 0 and "seed 0 (now 1)" in err


def test_focused_timesteps_are_the_chains_and_uniform_draws_are_unchanged():
    """--focus-fraction draws that share at the 5-step chain's timesteps (t=0 left out);
    at 0 the draw is the plain uniform one, so older checkpoints resume bit for bit."""
    import torch

    from diip_deploy.train.trainer import draw_timesteps, focus_timesteps

    chain = focus_timesteps(5)
    assert chain.tolist() == [800, 600, 400, 200]
    torch.manual_seed(7)
    plain = torch.randint(0, 1000, (4096,))
    torch.manual_seed(7)
    assert torch.equal(draw_timesteps(4096, chain, 0.0), plain)
    assert set(draw_timesteps(4096, chain, 1.0).tolist()) == {800, 600, 400, 200}
    mixed = draw_timesteps(4096, chain, 0.8)
    share = np.isin(mixed.numpy(), chain.numpy()).mean()
    assert 0.77 < share < 0.83, share  # 0.8 focused, plus the uniform draws that land on them


def test_focus_is_a_setting_a_resume_must_match(tmp_path):
    run = ["--work", str(tmp_path / "w"), "--steps", "2", "--focus-fraction", "0.5"]
    first = _train_cli(tmp_path, "m", *run)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    made = json.loads((tmp_path / "m" / "training.json").read_text())
    assert made["focus_fraction"] == 0.5 and made["focus_steps"] == 5
    other = _train_cli(tmp_path, "m", "--work", str(tmp_path / "w"), "--steps", "4", "--resume")
    _, err = other.communicate(timeout=300)
    assert other.returncode != 0 and "focus_fraction 0.5 (now None)" in err
    bad = _train_cli(
        tmp_path, "b", "--work", str(tmp_path / "b"), "--steps", "2", "--focus-fraction", "1", "--focus-steps", "1"
    )
    _, err = bad.communicate(timeout=300)
    assert bad.returncode != 0 and err.strip().splitlines()[-1].endswith(
        "--focus-steps must be 2 to 1000 (a DDIM chain with a step before t=0), got 1"
    )


def test_focus_on_a_chains_own_timesteps(tmp_path):
    """--focus-timesteps draws the focused share at exactly the given chain's timesteps (t=20
    kept: a chain ending above 0 calls the prior there), records them, and a resume without
    them is refused; a list that is not a chain is refused in one line."""
    from diip_deploy.train.trainer import draw_timesteps, focus_timesteps

    shipped = focus_timesteps(5, [700, 450, 250, 100, 20])
    assert shipped.tolist() == [700, 450, 250, 100, 20]
    assert set(draw_timesteps(2048, shipped, 1.0).tolist()) == {700, 450, 250, 100, 20}
    run = ["--work", str(tmp_path / "w"), "--steps", "2", "--focus-fraction", "0.5"]
    first = _train_cli(tmp_path, "m", *run, "--focus-timesteps", "700,450,250,100,20")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    made = json.loads((tmp_path / "m" / "training.json").read_text())
    assert made["focus_timesteps"] == [700, 450, 250, 100, 20] and made["focus_fraction"] == 0.5
    other = _train_cli(tmp_path, "m", *run, "--steps", "4", "--resume")
    _, err = other.communicate(timeout=300)
    assert other.returncode != 0 and "focus_timesteps [700, 450, 250, 100, 20] (now None)" in err
    for bad_list, says in (("20,700", "timesteps must fall strictly"), ("7x0", "integers separated by commas")):
        bad = _train_cli(tmp_path, "b", *run[2:], "--work", str(tmp_path / "b"), "--focus-timesteps", bad_list)
        _, err = bad.communicate(timeout=300)
        last = err.strip().splitlines()[-1]
        assert bad.returncode != 0 and "--focus-timesteps" in last and says in last, err


def test_photo_split_keeps_held_out_photos_out():
    import hashlib

    from PIL import Image

    from diip_deploy.train.photos import PHOTO_SETS, load_photos, split

    photos = load_photos()
    for larger in PHOTO_SETS[::-1]:  # the largest photo set this machine has unpacked
        try:
            photos = load_photos(photo_set=larger)
            break
        except FileNotFoundError as e:
            assert "models/fetch_photos.sh" in str(e)
    train, held = split(photos)
    assert set(train) | set(held) == set(photos) and "skimage/chelsea" in held and "skimage/astronaut" in train

    # by content, not by name: no held-out picture reaches training under another name
    # (sklearn's china and skimage's photos, or opencv's, must not be the same file twice)
    def digest(a):
        return hashlib.sha256(np.ascontiguousarray((a * 255).round().astype(np.uint8)).tobytes()).hexdigest()

    assert not {digest(a) for a in train.values()} & {digest(a) for a in held.values()}
    assert not any(a.shape == b.shape and np.abs(a - b).mean() < 2 / 255 for a in train.values() for b in held.values())

    # nor a resized copy (packages ship photos at other sizes): 32x32 thumbnails of
    # pictures of the same aspect stay far apart (the closest pair here differs by 0.15)
    def thumb(a):
        img = Image.fromarray((a * 255).round().astype(np.uint8)).resize((32, 32), Image.Resampling.BOX)
        return np.asarray(img, dtype=np.float32) / 255

    def aspect(a):
        return a.shape[1] / a.shape[0]

    thumbs = [(aspect(a), thumb(a)) for a in train.values()]
    for b in held.values():
        tb = thumb(b)
        assert all(np.abs(ta - tb).mean() > 0.05 for r, ta in thumbs if abs(r / aspect(b) - 1) < 0.05)


def test_kept_checkpoints_hold_their_own_step(tmp_path):
    """--keep-every keeps the checkpoint of every multiple of N under work/kept/; a kept
    step still holds that step's weights after the run has moved on (the next checkpoint
    replaces the file by rename, not in place), bit for bit what a run stopped there
    holds, and load_ema reads it as a benchmark would."""
    import torch

    from diip_deploy.train.trainer import load_ema, train

    settings = {**TINY_SETTINGS, "checkpoint_every": 4}
    train(tmp_path / "m6", tmp_path / "w6", steps=6, keep_every=3, **settings)
    kept = sorted(p.name for p in (tmp_path / "w6" / "kept").iterdir())
    assert kept == ["step_0000003.ckpt", "step_0000006.ckpt"]
    train(tmp_path / "m3", tmp_path / "w3", steps=3, **settings)
    at3, state3 = load_ema(tmp_path / "w6" / "kept" / "step_0000003.ckpt")
    alone, _ = load_ema(tmp_path / "w3")
    last, _ = load_ema(tmp_path / "w6")
    assert state3["step"] == 3 and len(state3["losses"]) == 3
    a, b, c = at3.state_dict(), alone.state_dict(), last.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
