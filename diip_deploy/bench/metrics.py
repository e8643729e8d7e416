"""Image quality metrics on HxWx3 images in [0, 1]: PSNR, SSIM, HaarPSI, and LPIPS when
its backbone weights are already on disk (never a random backbone)."""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Sequence

import numpy as np


def psnr(ref: np.ndarray, img: np.ndarray, data_range: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(ref, np.float64) - np.asarray(img, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def gain_summary(ours: Sequence[float], base: Sequence[float], digits: int = 3) -> Dict[str, Any]:
    """Crop-for-crop gain of ``ours`` over ``base`` (one score per crop, the same crops in
    the same order): mean, standard error of the mean and crops won, rounded to ``digits``.
    The one place every side-by-side benchmark counts a gain."""
    d = np.asarray(ours, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    return {
        "gain_db": round(float(d.mean()), digits),
        "stderr_db": round(se, digits),
        "won": int((d > 0).sum()),
        "of": len(d),
    }


def ssim(ref: np.ndarray, img: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(ref, img, data_range=1.0, channel_axis=2))


def haarpsi(ref: np.ndarray, img: np.ndarray, C: float = 30.0, alpha: float = 4.2) -> float:
    """HaarPSI (Reisenhofer et al. 2018): Haar-wavelet perceptual similarity in [0, 1],
    needs no learned weights.  Images in [0, 1]; computed in YIQ on a 0..255 scale."""
    from scipy.signal import convolve2d

    def yiq(x):
        x = np.asarray(x, np.float64) * 255.0
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        return (0.299 * r + 0.587 * g + 0.114 * b, 0.596 * r - 0.274 * g - 0.322 * b, 0.211 * r - 0.523 * g + 0.312 * b)

    def down(c):  # the reference's preprocessing: 2x2 mean, then every other pixel
        return convolve2d(c, np.ones((2, 2)) / 4.0, mode="same")[::2, ::2]

    def haar(c, scales=3):
        out = []
        for s in range(1, scales + 1):
            f = 2.0 ** (-s) * np.ones((2**s, 2**s))
            f[: 2 ** (s - 1), :] *= -1
            out.append((convolve2d(c, f, mode="same"), convolve2d(c, f.T, mode="same")))
        return out  # [(horizontal, vertical) per scale]

    def sim(a, b):
        return (2 * a * b + C) / (a * a + b * b + C)

    y1, i1, q1 = (down(c) for c in yiq(ref))
    y2, i2, q2 = (down(c) for c in yiq(img))
    h1, h2 = haar(y1), haar(y2)
    local, weights = [], []
    for ori in range(2):
        weights.append(np.maximum(np.abs(h1[2][ori]), np.abs(h2[2][ori])))
        local.append((sim(np.abs(h1[0][ori]), np.abs(h2[0][ori])) + sim(np.abs(h1[1][ori]), np.abs(h2[1][ori]))) / 2)
    mean2 = np.ones((2, 2)) / 4.0
    si = sim(np.abs(convolve2d(i1, mean2, mode="same")), np.abs(convolve2d(i2, mean2, mode="same")))
    sq = sim(np.abs(convolve2d(q1, mean2, mode="same")), np.abs(convolve2d(q2, mean2, mode="same")))
    local.append((si + sq) / 2)
    weights.append((weights[0] + weights[1]) / 2)
    L, W = np.stack(local), np.stack(weights)
    v = float(np.sum(1 / (1 + np.exp(-alpha * L)) * W) / np.sum(W))
    return float((np.log(v / (1 - v)) / alpha) ** 2)


@functools.lru_cache(maxsize=1)
def _lpips_model():
    """LPIPS (AlexNet), loaded once, or None when its backbone weights are not on disk."""
    try:
        import os

        from torch.hub import get_dir

        if not os.path.exists(os.path.join(get_dir(), "checkpoints", "alexnet-owt-7be5be79.pth")):
            return None
        import lpips  # type: ignore[import-not-found]

        return lpips.LPIPS(net="alex", verbose=False)
    except Exception:
        return None


def lpips_or_none(ref: np.ndarray, img: np.ndarray) -> Optional[float]:
    """LPIPS if the lpips package and its torchvision backbone weights are present
    locally; None otherwise (reported as n/a).  Never downloads."""
    model = _lpips_model()
    if model is None:
        return None
    import torch

    def t(x):
        return torch.from_numpy(np.asarray(x, np.float32).transpose(2, 0, 1)[None] * 2 - 1)

    with torch.no_grad():
        return float(model(t(ref), t(img)))
