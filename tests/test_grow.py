"""Deepening a trained UNet (diip-train --layers-per-block with --init-from) keeps what it
computes, and a deepened run checkpoints, resumes and is judged at its own depth."""

import pytest
import torch
from test_train import TINY_SETTINGS

from diip_deploy.train.grow import deepen
from diip_deploy.train.trainer import make_unet


def _trained_stand_in(channels=(8, 16, 32)):
    """A UNet whose every weight is non-zero and non-default, as a trained one's are, so
    an identity that only holds at diffusers' initial values would show."""
    torch.manual_seed(0)
    unet = make_unet(channels, sample_size=16)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()


@pytest.mark.parametrize("depth", [2, 3])
def test_a_deepened_unet_computes_what_the_trained_one_does(depth):
    trained = _trained_stand_in()
    grown = deepen(trained, depth, lambda n: make_unet((8, 16, 32), sample_size=16, layers_per_block=n)).eval()
    assert grown.config.layers_per_block == depth
    assert all(len(b.resnets) == depth for b in grown.down_blocks)
    assert all(len(b.resnets) == depth + 1 for b in grown.up_blocks)
    n_trained = sum(p.numel() for p in trained.parameters())
    assert sum(p.numel() for p in grown.parameters()) > 1.3 * n_trained
    x, t = torch.randn(3, 3, 16, 16), torch.tensor([900, 400, 10])
    with torch.no_grad():
        want, got = trained(x, t).sample, grown(x, t).sample
    assert want.abs().mean() > 0.1
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    # the new layers are trainable capacity, not dead weight: one gradient step on them
    # changes the output
    new = grown.down_blocks[0].resnets[depth - 1].conv2
    assert new.weight.abs().max() == 0
    loss = grown(x, t).sample.square().mean()
    loss.backward()
    assert new.weight.grad.abs().max() > 0


def test_deepening_refuses_to_make_a_unet_shallower():
    trained = _trained_stand_in((8, 16))
    deeper = deepen(trained, 2, lambda n: make_unet((8, 16), sample_size=16, layers_per_block=n))
    with pytest.raises(SystemExit, match="already have 2"):
        deepen(deeper, 1, lambda n: make_unet((8, 16), sample_size=16, layers_per_block=n))


def test_a_deepened_run_resumes_and_is_judged_at_its_depth(tmp_path):
    from diip_deploy.train.trainer import load_ema, save_pipeline, train

    save_pipeline(_trained_stand_in((8, 16)), tmp_path / "trained")
    run = dict(init_from=tmp_path / "trained", layers_per_block=2, **TINY_SETTINGS)
    first = train(tmp_path / "out", tmp_path / "work", steps=2, **run)
    assert first["layers_per_block"] == 2
    ema, state = load_ema(tmp_path / "work")
    assert ema.config.layers_per_block == 2 and state["settings"]["layers_per_block"] == 2
    resumed = train(tmp_path / "out", tmp_path / "work", steps=4, resume=True, **run)
    assert resumed["steps"] == 4 and resumed["losses"][:2] == first["losses"]
    # the depth is a setting a resume must match
    with pytest.raises(SystemExit, match="settings"):
        train(tmp_path / "out", tmp_path / "work", steps=5, resume=True, **{**run, "layers_per_block": 1})
