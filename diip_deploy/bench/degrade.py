"""The paper's degradations, seeded and parameterised, on clean HxWx3 images in [0, 1].

``diip-degrade`` writes degraded copies of a user's photos with them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

import click
import numpy as np
from PIL import Image

from ..cli_common import OneLineErrors


def gaussian_noise(img: np.ndarray, sigma: float = 25.0, seed: int = 0) -> np.ndarray:
    """Additive white Gaussian noise, sigma in 0..255 units, clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0.0, sigma / 255.0, img.shape), 0.0, 1.0)


def _to_pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))


def _from_pil(pil: Image.Image) -> np.ndarray:
    return np.asarray(pil.convert("RGB"), dtype=np.float64) / 255.0


def jpeg(img: np.ndarray, quality: int = 10, seed: int = 0) -> np.ndarray:
    """JPEG compression artefacts at the given quality factor (deterministic; seed unused)."""
    buf = io.BytesIO()
    _to_pil(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return _from_pil(Image.open(buf))


def super_resolution(img: np.ndarray, factor: int = 4, method: str = "bicubic", seed: int = 0) -> np.ndarray:
    """Downsample by ``factor`` (area or bicubic), then bicubic-upsample back: what a blind
    method sees of a low-resolution photo."""
    h, w = img.shape[:2]
    resample = {"area": Image.Resampling.BOX, "bicubic": Image.Resampling.BICUBIC}[method]
    small = _to_pil(img).resize((w // factor, h // factor), resample)
    return _from_pil(small.resize((w, h), Image.Resampling.BICUBIC))


def gaussian_blur(img: np.ndarray, sigma: float = 1.5, seed: int = 0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.clip(gaussian_filter(img, sigma=(sigma, sigma, 0), mode="reflect"), 0, 1)


def _warp(img: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    coords = [np.clip(yy + dy, 0, h - 1), np.clip(xx + dx, 0, w - 1)]
    return np.stack(
        [map_coordinates(img[..., c], coords, order=1, mode="reflect") for c in range(img.shape[2])], axis=2
    )


def nonuniform_deformation(
    img: np.ndarray, strength: float = 2.5, smoothness: float = 6.0, seed: int = 0
) -> np.ndarray:
    """Warp by a smooth random displacement field; ``strength`` is the RMS shift in pixels."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    field = [gaussian_filter(rng.standard_normal((h, w)), smoothness, mode="wrap") for _ in range(2)]
    field = [f / (np.sqrt(np.mean(f**2)) + 1e-12) * strength for f in field]
    return np.clip(_warp(img, field[0], field[1]), 0, 1)


def water_drops(img: np.ndarray, drops: int = 6, radius: float = 0.09, blur: float = 1.2, seed: int = 0) -> np.ndarray:
    """Raindrops on a lens: each drop refracts what is behind it (a flipped, magnified
    local lens warp), blurs it slightly, and blends in with a soft rim.  ``radius`` is
    the mean drop radius as a fraction of the shorter side."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    out = img.copy()
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    for _ in range(drops):
        r = max(2.0, rng.uniform(0.6, 1.4) * radius * min(h, w))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / r
        inside = d < 1
        # a convex drop maps its disc onto a larger, inverted region of the scene
        k = -0.6 * (1 - d**2).clip(0)
        lens = _warp(out, (yy - cy) * k * 1.5, (xx - cx) * k * 1.5)
        lens = gaussian_filter(lens, sigma=(blur, blur, 0))
        alpha = np.clip((1 - d) * 4, 0, 1)[..., None] * inside[..., None]
        rim = np.exp(-(((d - 0.85) / 0.08) ** 2))[..., None] * 0.15 * inside[..., None]
        out = out * (1 - alpha) + (lens * 0.92 + 0.06) * alpha - rim
    return np.clip(out, 0, 1)


@dataclass(frozen=True)
class Degradation:
    name: str
    fn: Callable[..., np.ndarray]
    params: Dict[str, object]

    def __call__(self, img: np.ndarray, seed: int = 0) -> np.ndarray:
        return self.fn(img, seed=seed, **self.params)

    @property
    def label(self) -> str:
        return self.name + "(" + ", ".join(f"{k}={v}" for k, v in self.params.items()) + ")"


# The benchmark's tasks, in the paper's terms.
TASKS: Dict[str, Degradation] = {
    "noise25": Degradation("noise", gaussian_noise, {"sigma": 25.0}),
    # milder and stronger noise: whether the residual guard, judged on sigma 25, keeps them
    "noise10": Degradation("noise", gaussian_noise, {"sigma": 10.0}),
    "noise50": Degradation("noise", gaussian_noise, {"sigma": 50.0}),
    "jpeg10": Degradation("jpeg", jpeg, {"quality": 10}),
    "sr4": Degradation("sr", super_resolution, {"factor": 4, "method": "bicubic"}),
    "sr8": Degradation("sr", super_resolution, {"factor": 8, "method": "bicubic"}),
    "waterdrop": Degradation("waterdrop", water_drops, {"drops": 6, "radius": 0.09}),
    "deform": Degradation("deform", nonuniform_deformation, {"strength": 2.5, "smoothness": 6.0}),
    "blur": Degradation("blur", gaussian_blur, {"sigma": 1.5}),
}


SCIPY_TASKS = ("waterdrop", "deform", "blur")  # these use scipy.ndimage


@click.command(cls=OneLineErrors, name="diip-degrade")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--task", "tasks", multiple=True, type=click.Choice(sorted(TASKS)), default=("noise25",), show_default=True
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def main(inputs, tasks, out_dir, seed):
    """Write degraded copies of INPUTS (OUT/<stem>_<task>.png), to try diip-run on."""
    from ..runtime.images.codec import ImageError, load_image, save_image

    needs = [t for t in tasks if t in SCIPY_TASKS]
    if needs:
        try:
            import scipy.ndimage  # noqa: F401
        except ImportError:
            raise click.UsageError(f"--task {needs[0]} needs scipy: pip install scipy") from None
    sources = {Path(p).resolve() for p in inputs}
    failed = 0
    for path in inputs:
        try:
            img = load_image(path).astype(np.float64)
        except ImageError as e:
            click.echo(f"diip-degrade: error: {e}", err=True)
            failed += 1
            continue
        for t in tasks:
            target = out_dir / f"{path.stem}_{t}.png"
            if target.resolve() in sources:
                click.echo(f"diip-degrade: error: {target} is an input; not overwriting it", err=True)
                failed += 1
                continue
            save_image(target, TASKS[t](img, seed=seed))
            click.echo(f"{target}: {TASKS[t].label}")
    return 1 if failed else 0
