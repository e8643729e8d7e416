"""Deep Image Prior (Ulyanov et al., CVPR 2018) as a baseline: an untrained
encoder-decoder with skip connections, fitted to y from a fixed noise input with Adam
(lr 0.01) and regularisation noise on the input, with a per-iteration callback so the
benchmark can stop it at a fixed count or at the oracle's best PSNR."""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import nn


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3, stride), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)
    )


class SkipNet(nn.Module):
    """DIP's 'skip' architecture scaled down for CPU (the paper's has 128 channels and
    5 levels, sized for 512x512 images): ``depth`` down/up levels of ``width`` channels."""

    def __init__(self, cin: int = 32, width: int = 32, skip: int = 4, depth: int = 4, cout: int = 3):
        super().__init__()
        self.down = nn.ModuleList()
        self.skips = nn.ModuleList()
        self.up = nn.ModuleList()
        c = cin
        for _ in range(depth):
            self.skips.append(nn.Sequential(nn.Conv2d(c, skip, 1), nn.BatchNorm2d(skip), nn.LeakyReLU(0.2)))
            self.down.append(nn.Sequential(_block(c, width, 2), _block(width, width)))
            c = width
        for _ in range(depth):
            self.up.append(
                nn.Sequential(
                    nn.BatchNorm2d(width + skip),
                    _block(width + skip, width),
                    nn.Conv2d(width, width, 1),
                    nn.BatchNorm2d(width),
                    nn.LeakyReLU(0.2),
                )
            )
        self.out = nn.Conv2d(width, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down, skip in zip(self.down, self.skips):
            skips.append(skip(x))
            x = down(x)
        for up, s in zip(self.up, reversed(skips)):
            x = nn.functional.interpolate(x, size=s.shape[-2:], mode="bilinear", align_corners=False)
            x = up(torch.cat([x, s], 1))
        return torch.sigmoid(self.out(x))


def run_dip(
    y: np.ndarray,
    iterations: int = 1500,
    lr: float = 0.01,
    seed: int = 0,
    reg_noise: float = 1.0 / 30,
    callback: Optional[Callable[[Dict], None]] = None,
) -> np.ndarray:
    """Fit DIP to y (HxWx3 in [0, 1]); returns the last output.  The callback receives
    {'k', 'x', 'loss'} per iteration (x as HxWx3 numpy)."""
    torch.manual_seed(seed)
    h, w = y.shape[:2]
    net = SkipNet()
    z = torch.rand(1, 32, h, w) * 0.1
    target = torch.from_numpy(np.asarray(y, np.float32).transpose(2, 0, 1)[None])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    out = None
    for k in range(iterations):
        inp = z + reg_noise * torch.randn_like(z) if reg_noise > 0 else z
        out = net(inp)
        loss = nn.functional.mse_loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if callback is not None:
            callback({"k": k, "x": out.detach()[0].numpy().transpose(1, 2, 0), "loss": loss.item()})
    assert out is not None
    return out.detach()[0].numpy().transpose(1, 2, 0)
