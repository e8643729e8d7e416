"""The training script runs end to end on a tiny configuration, so it cannot rot."""

import json

import numpy as np


def test_a_few_training_steps(tmp_path):
    from diffusers import DDPMPipeline

    from diip_deploy.train.trainer import train

    out = tmp_path / "model"
    settings = dict(
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
    info = train(out, tmp_path / "work", steps=4, **settings)
    assert info["steps"] == 4 and len(info["losses"]) == 4 and all(np.isfinite(info["losses"]))
    assert not set(info["train_photos"]) & set(info["held_out"])
    pipe = DDPMPipeline.from_pretrained(str(out))
    assert pipe.unet.config.block_out_channels == (8, 16) or list(pipe.unet.config.block_out_channels) == [8, 16]
    assert json.loads((out / "training.json").read_text())["steps"] == 4
    # resuming from the checkpoint continues the count instead of starting over
    info2 = train(out, tmp_path / "work", steps=6, **settings)
    assert info2["steps"] == 6 and info2["losses"][:4] == info["losses"]


def test_photo_split_keeps_held_out_photos_out():
    import hashlib

    from diip_deploy.train.photos import load_photos, split

    photos = load_photos()
    train, held = split(photos)
    assert set(train) | set(held) == set(photos) and "skimage/chelsea" in held and "skimage/astronaut" in train

    # by content, not by name: no held-out picture reaches training under another name
    # (sklearn's china and skimage's photos, or opencv's, must not be the same file twice)
    def digest(a):
        return hashlib.sha256(np.ascontiguousarray((a * 255).round().astype(np.uint8)).tobytes()).hexdigest()

    assert not {digest(a) for a in train.values()} & {digest(a) for a in held.values()}
    assert not any(a.shape == b.shape and np.abs(a - b).mean() < 2 / 255 for a in train.values() for b in held.values())
