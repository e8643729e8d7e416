"""Validation crops with saturated colours, from the training photos only, and the
per-channel colour error that shows when a restoration drifts off them.

The ordinary validation crops (``tune.validation_crops``) rarely hold a saturated red or
blue, and a run that stops before the chain reaches such a colour loses it (a red comes
out orange) without their scores showing it.  These add the most saturated windows of the
training photos, and hue-rotated, saturation-raised copies of ordinary crops aimed at red,
orange, green and blue.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

# Target hues (PIL's HSV scale, 0..255) for the rotated copies.
HUES = {"red": 0, "orange": 21, "green": 85, "blue": 163}


def _hsv(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray((img * 255).round().astype(np.uint8)).convert("HSV"), dtype=np.float64)


def _rgb(hsv: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(hsv.round().clip(0, 255).astype(np.uint8), "HSV").convert("RGB")) / 255.0


def recoloured(img: np.ndarray, hue: int, saturation: float = 0.85) -> np.ndarray:
    """``img`` with every pixel's hue turned to ``hue`` (keeping the hue's spread around its
    mean) and its saturation raised to at least ``saturation``: a saturated copy with the
    crop's own texture and shading."""
    hsv = _hsv(img)
    h = hsv[..., 0]
    spread = ((h - np.median(h) + 128) % 256) - 128
    hsv[..., 0] = (hue + 0.25 * spread) % 256
    hsv[..., 1] = np.maximum(hsv[..., 1], 255 * saturation)
    return _rgb(hsv)


def most_saturated_windows(
    photos: Sequence[Tuple[str, np.ndarray]], size: int, n: int, stride: int = 16
) -> List[Tuple[str, np.ndarray]]:
    """The ``n`` windows of ``size`` with the highest mean saturation times value (a dark
    pixel's hue does not count), at most one per photo."""
    best = []
    for name, img in photos:
        hsv = _hsv(img)
        colourful = hsv[..., 1] * hsv[..., 2] / 255.0
        h, w = colourful.shape
        top = max(
            (
                (colourful[y : y + size, x : x + size].mean(), y, x)
                for y in range(0, h - size + 1, stride)
                for x in range(0, w - size + 1, stride)
            ),
            default=None,
        )
        if top is not None:
            best.append((top[0], f"{name}:{top[1]},{top[2]}", img[top[1] : top[1] + size, top[2] : top[2] + size]))
    best.sort(key=lambda b: -b[0])
    return [(label, crop) for _, label, crop in best[:n]]


def saturated_crops(n_windows: int, n_recoloured: int, size: int, seed: int = 0) -> List[Tuple[str, np.ndarray]]:
    """(name, clean crop) pairs: the most saturated windows of the training photos at 1/4
    scale, and ``n_recoloured`` ordinary validation crops turned to each of HUES in turn."""
    from PIL import Image

    from ..train.photos import default_split
    from .tune import validation_crops

    train, _ = default_split()
    small = []
    for name, img in sorted(train.items()):
        h, w = img.shape[:2]
        pil = Image.fromarray((img * 255).round().astype(np.uint8)).resize((w // 4, h // 4), Image.Resampling.BOX)
        small.append((f"{name}@0.25", np.asarray(pil, dtype=np.float64) / 255.0))
    out = most_saturated_windows(small, size, n_windows)
    hues = list(HUES.items())
    for i, (name, crop) in enumerate(validation_crops(n_recoloured, size, seed + 1)):
        hue_name, hue = hues[i % len(hues)]
        out.append((f"{name}->{hue_name}", recoloured(crop, hue)))
    return out


def channel_mean_error(restored: np.ndarray, clean: np.ndarray) -> float:
    """The largest error of a colour channel's mean, on the 0..255 scale (HxWxC in [0, 1])."""
    diff = restored.reshape(-1, restored.shape[-1]).mean(0) - clean.reshape(-1, clean.shape[-1]).mean(0)
    return float(np.abs(diff).max() * 255)
