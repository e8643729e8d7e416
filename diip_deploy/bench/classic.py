"""Classic blind baselines a user would otherwise reach for (scikit-image)."""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np


def tv(y: np.ndarray) -> np.ndarray:
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(y, weight=0.08, channel_axis=2)


def nlmeans(y: np.ndarray) -> np.ndarray:
    from skimage.restoration import denoise_nl_means, estimate_sigma

    sigma = float(np.mean(estimate_sigma(y, channel_axis=2)))
    return denoise_nl_means(
        y, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True, channel_axis=2
    )


def wavelet(y: np.ndarray) -> np.ndarray:
    from skimage.restoration import denoise_wavelet

    return denoise_wavelet(y, channel_axis=2, convert2ycbcr=True, method="BayesShrink", mode="soft", rescale_sigma=True)


def identity(y: np.ndarray) -> np.ndarray:
    """The input itself; for SR tasks the input is already the bicubic upsampling."""
    return y


# Which classic baselines make sense for which degradation.
CLASSIC: Dict[str, Dict[str, Callable[[np.ndarray], np.ndarray]]] = {
    "noise": {"TV": tv, "NL-means": nlmeans, "wavelet": wavelet},
    "jpeg": {"TV": tv, "NL-means": nlmeans, "wavelet": wavelet},
    "sr": {"bicubic": identity},
}
