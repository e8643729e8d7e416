"""Test images made on the fly."""

from pathlib import Path

import numpy as np
from PIL import Image


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image in [0, 1] (HxWx3)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    ph = rng.uniform(0, 6, 3)
    return np.stack([0.5 + 0.4 * np.sin(4 * xx + 3 * yy + p) for p in ph], axis=2)


def save(path: Path, a: np.ndarray, mode: str = "RGB", **kw) -> Path:
    u8 = (np.clip(a, 0, 1) * 255).astype(np.uint8)
    im = Image.fromarray(u8)
    if mode == "L":
        im = im.convert("L")
    elif mode == "RGBA":
        im = im.convert("RGBA")
        im.putalpha(128)
    elif mode == "P":
        im = im.convert("P", palette=Image.ADAPTIVE, colors=16)
    im.save(path, **kw)
    return path
