"""Model loading: pipeline and bare-UNet folders, schedules, and what is refused."""

import json
import shutil

import numpy as np
import pytest

from diip_deploy.export.loading import ModelLoadError, alphas_from_scheduler_config, load_model, size_multiple
from diip_deploy.schedule import linear_alphas_cumprod


def test_pipeline_folder(tiny_pipeline):
    m = load_model(str(tiny_pipeline))
    assert type(m.unet).__name__ == "UNet2DModel"
    assert m.prediction_type == "epsilon"
    np.testing.assert_allclose(m.alphas_cumprod, linear_alphas_cumprod())
    assert len(m.weights_sha256) == 64 and size_multiple(m.unet_config) == 2
    assert not any(p.requires_grad for p in m.unet.parameters())


def test_bare_unet_folder_with_v_prediction(tiny_pipeline, tmp_path):
    bare = shutil.copytree(tiny_pipeline / "unet", tmp_path / "bare")
    cfg = json.loads((tiny_pipeline / "scheduler" / "scheduler_config.json").read_text())
    cfg.update(prediction_type="v_prediction", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    (bare / "scheduler_config.json").write_text(json.dumps(cfg))
    m = load_model(str(bare))
    assert m.prediction_type == "v_prediction"
    assert m.weights_sha256 == load_model(str(tiny_pipeline)).weights_sha256
    from diffusers import DDPMScheduler

    np.testing.assert_allclose(m.alphas_cumprod, DDPMScheduler.from_config(cfg).alphas_cumprod.numpy(), rtol=1e-6)


def test_diffusers_schedules_agree():
    from diffusers import DDPMScheduler

    for cfg in (
        {"beta_schedule": "linear"},
        {"beta_schedule": "squaredcos_cap_v2"},
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    ):
        want = DDPMScheduler(**cfg).alphas_cumprod.numpy()
        np.testing.assert_allclose(alphas_from_scheduler_config(cfg), want, rtol=1e-5, atol=1e-9)
    with pytest.raises(ModelLoadError):
        alphas_from_scheduler_config({"beta_schedule": "sigmoid"})


def test_pickled_checkpoint_refused_not_unpickled(tiny_pipeline, tmp_path):
    bare = shutil.copytree(tiny_pipeline / "unet", tmp_path / "bare")
    for f in bare.glob("*.safetensors"):
        f.rename(f.with_name("diffusion_pytorch_model.bin"))
    with pytest.raises(ModelLoadError, match="pickled diffusion_pytorch_model.bin"):
        load_model(str(bare))


def test_unknown_prediction_type_and_non_model(tiny_pipeline, tmp_path):
    with pytest.raises(ModelLoadError, match="prediction_type"):
        load_model(str(tiny_pipeline), prediction_type="sample")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="not a diffusers"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_model(str(tmp_path / "missing" / "deeper"))


def test_hub_id_without_network_is_one_clear_error():
    """The real hub path runs; offline (HF_HUB_OFFLINE=1 here) it fails with one line."""
    with pytest.raises(ModelLoadError, match="cannot fetch 'google/ddpm-celebahq-256' from the hub"):
        load_model("google/ddpm-celebahq-256")
