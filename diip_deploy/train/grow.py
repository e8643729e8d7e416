"""Deepen a trained UNet without changing what it computes (``diip-train --layers-per-block``).

Every run of the 32, 64, 128 UNet has levelled off at the same held-out gain, and a
larger shape trained from scratch needs more steps than a session has. Growing the
trained UNet instead starts the larger one where the smaller one stopped: each block
gets more resnets (``layers_per_block``), the new ones initialised as the identity, so
the grown UNet's output equals the trained one's to rounding and training continues
from there with the extra capacity.

How each new layer is the identity (diffusers' UNet2DModel, ``layers_per_block`` n to m):
- a down block's new resnets come after the trained ones (in = out channels): their
  last convolution is zero, so the residual adds nothing. Each one's output is also a
  new skip connection, a copy of the trained block's last output;
- an up block's resnets consume those skips from the last down resnet backwards, and
  the block's last resnet takes the downsampler's skip at the block's input width. So
  the trained first resnet stays first (its skip is now the copy), the trained others
  keep their places at the end, and the new ones in between ignore their skip: their
  last convolution is zero and their 1x1 shortcut passes the hidden state's channels
  and drops the skip's;
- a new attention layer's output projection is zero, and attention is residual.
"""

from __future__ import annotations

from typing import Any, Dict

import torch


def _identity_resnet(resnet: Any, keep_channels: int) -> None:
    """Make a ResnetBlock2D return its input's first ``keep_channels`` channels."""
    torch.nn.init.zeros_(resnet.conv2.weight)
    torch.nn.init.zeros_(resnet.conv2.bias)
    if resnet.conv_shortcut is not None:
        w = torch.zeros_like(resnet.conv_shortcut.weight)
        w[:keep_channels, :keep_channels, 0, 0] = torch.eye(keep_channels)
        resnet.conv_shortcut.weight.data.copy_(w)
        torch.nn.init.zeros_(resnet.conv_shortcut.bias)


def _identity_attention(attention: Any) -> None:
    torch.nn.init.zeros_(attention.to_out[0].weight)
    torch.nn.init.zeros_(attention.to_out[0].bias)


def _block_layer_map(trained_layers: int, grown_layers: int, up: bool) -> Dict[int, int]:
    """Where each trained layer of a block goes in the grown block (new layers elsewhere)."""
    if not up:
        return {i: i for i in range(trained_layers)}
    shift = grown_layers - trained_layers
    return {i: (i if i == 0 else i + shift) for i in range(trained_layers)}


def deepen(trained: Any, layers_per_block: int, make_unet) -> Any:
    """A UNet2DModel with ``layers_per_block`` resnets a down block, computing what
    ``trained`` computes (its own weights where the depth is the same). ``make_unet(n)``
    builds the grown shape (the trainer's own constructor, so the two stay one
    architecture)."""
    n = trained.config.layers_per_block
    if layers_per_block < n:
        raise SystemExit(f"--layers-per-block {layers_per_block}: the weights already have {n} layers a block")
    grown = make_unet(layers_per_block)
    placed = {up: _block_layer_map(n + up, layers_per_block + up, up) for up in (False, True)}
    with torch.no_grad():
        for up, blocks in ((False, grown.down_blocks), (True, grown.up_blocks)):
            for block in blocks:
                for i, resnet in enumerate(block.resnets):
                    if i in placed[up].values():
                        continue
                    _identity_resnet(resnet, resnet.out_channels)
                    if getattr(block, "attentions", None) is not None:
                        _identity_attention(block.attentions[i])
        grown_state = grown.state_dict()
        for key, value in trained.state_dict().items():
            grown_state[_grown_key(key, placed[True])] = value
    grown.load_state_dict(grown_state)
    return grown


def _grown_key(key: str, up_placed: Dict[int, int]) -> str:
    """The grown UNet's name for a trained parameter: only up blocks' layers move, to
    ``up_placed`` of their index."""
    parts = key.split(".")
    if parts[0] == "up_blocks" and parts[2] in ("resnets", "attentions"):
        parts[3] = str(up_placed[int(parts[3])])
    return ".".join(parts)
