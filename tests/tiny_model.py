"""A tiny random diffusers UNet2DModel (attention + GroupNorm), saved as a pipeline."""

from __future__ import annotations

from pathlib import Path


def make_tiny_pipeline(path: Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    sched = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type=prediction_type,
    )
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(str(path), safe_serialization=True)
    return path
