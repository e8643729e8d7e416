"""bench/prior_denoise.py's told-the-noise-level row: the timestep is the one whose
forward-process noise matches sigma 25, and the shipped prior, told it, denoises."""

import sys

import numpy as np
import pytest
from conftest import REPO
from images import smooth_image

pytest.importorskip("diffusers")
sys.path.insert(0, str(REPO / "bench"))


def test_told_noise_level_picks_the_matching_timestep_and_denoises():
    from prior_curve import noisy
    from prior_denoise import load_unet, told_noise_psnr

    from diip_deploy.bench.metrics import psnr
    from diip_deploy.export.loading import folder_alphas_cumprod

    table = folder_alphas_cumprod(REPO / "models" / "default")
    crops = [(f"c{i}", smooth_image(64, 64, seed=i)) for i in range(2)]
    row = told_noise_psnr(load_unet(REPO / "models" / "default"), crops, table)
    ratio = np.sqrt((1 - table) / table)
    assert abs(ratio[row["t"]] - 2 * 25 / 255) <= np.abs(np.diff(ratio[row["t"] - 1 : row["t"] + 2])).max()
    noisy_psnr = np.mean([psnr(c, y) for (_, c), y in zip(crops, noisy(crops))])
    assert row["psnr"] > noisy_psnr + 5, (row, noisy_psnr)  # a denoiser, not the input back
