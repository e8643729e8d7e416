"""Image files in and out: decoding with clear errors, padding to the UNet's multiple,
and atomic writes (temporary name, then rename), so no half-written file is left."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np

MIN_SIDE = 8


class ImageError(Exception):
    """An input image cannot be used; one line says why."""


def check_pixels(height: int, width: int, max_pixels: Optional[int]) -> None:
    """Refuse an image larger than ``max_pixels`` before any decoding or compute."""
    if max_pixels is not None and height * width > max_pixels:
        raise ImageError(f"image is {width}x{height} = {height * width} pixels, over --max-pixels {max_pixels}")


def load_image(path: Path | str, channels: int = 3, max_pixels: Optional[int] = None) -> np.ndarray:
    """HxWxC float32 in [0, 1]; grayscale, alpha (over white) and palette images converted.
    The size is checked against ``max_pixels`` from the header, before decoding."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise ImageError(f"{p}: no such file")
    try:
        with Image.open(p) as im:
            try:
                check_pixels(im.height, im.width, max_pixels)
            except ImageError as e:
                raise ImageError(f"{p}: {e}") from None
            im.load()
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA")
            if im.mode in ("RGBA", "LA", "La", "RGBa"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            im = im.convert("L" if channels == 1 else "RGB")
            a = np.asarray(im, dtype=np.float32) / 255.0
    except UnidentifiedImageError:
        raise ImageError(f"{p}: not an image PIL can read (PNG or JPEG expected)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{p}: refused as a possible decompression bomb ({str(e).splitlines()[0]})") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"{p}: cannot decode image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if a.ndim == 2:
        a = a[..., None]
    if min(a.shape[:2]) < MIN_SIDE:
        raise ImageError(f"{p}: image is {a.shape[1]}x{a.shape[0]}, smaller than {MIN_SIDE} px on a side")
    return a


def to_model_range(img: np.ndarray) -> np.ndarray:
    """HxWxC [0, 1] -> 1xCxHxW [-1, 1]."""
    return (img.transpose(2, 0, 1)[None] * 2.0 - 1.0).astype(np.float32)


def from_model_range(x: np.ndarray) -> np.ndarray:
    """1xCxHxW [-1, 1] -> HxWxC [0, 1]."""
    return np.clip((x[0].transpose(1, 2, 0) + 1.0) / 2.0, 0.0, 1.0)


def pad_to_multiple(img: np.ndarray, multiple: int) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Reflect-pad HxWxC at the bottom/right to multiples of ``multiple``."""
    h, w = img.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return img, (h, w)
    mode = "reflect" if ph < h and pw < w else "symmetric"
    return np.pad(img, ((0, ph), (0, pw), (0, 0)), mode=mode), (h, w)


def crop_to(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    return img[: size[0], : size[1]]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_image(path: Path, img: np.ndarray) -> None:
    """HxWxC [0, 1] -> 8-bit PNG, atomically."""
    from PIL import Image

    a = (np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    pil = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)
    write_atomic(Path(path), lambda tmp: pil.save(tmp, format="PNG"))


def save_json(path: Path, data: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)

    write_atomic(Path(path), write)
