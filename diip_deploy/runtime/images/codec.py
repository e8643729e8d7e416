"""Image files in and out: decoding with clear errors, padding to the UNet's multiple,
and atomic writes (temporary name, then rename), so no half-written file is left."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

MIN_SIDE = 8


class ImageError(Exception):
    """An input image cannot be used; one line says why."""


def check_pixels(height: int, width: int, max_pixels: Optional[int]) -> None:
    """Refuse an image larger than ``max_pixels`` before any decoding or compute."""
    if max_pixels is not None and height * width > max_pixels:
        raise ImageError(f"image is {width}x{height} = {height * width} pixels, over --max-pixels {max_pixels}")


HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _high_depth_to_unit(im, notes: Dict[str, Any]) -> np.ndarray:
    """16-bit and 32-bit integer or float single-channel images, scaled to [0, 1] (Pillow's
    own convert('L') clips them to 255 and gives all-white or all-black pictures)."""
    a = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        if not np.isfinite(a).all():
            raise ImageError("float image holds NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:
            notes["converted"] = "32-bit float, used as [0, 1]"
            return a
        scale = hi if lo >= 0.0 else None
        if scale:
            notes["converted"] = f"32-bit float, scaled by 1/{hi:g}"
            return a / hi
        notes["converted"] = f"32-bit float, rescaled from [{lo:g}, {hi:g}]"
        return (a - lo) / max(hi - lo, 1e-30)
    peak = 65535.0 if im.mode.startswith("I;16") or a.max() <= 65535 else float(2**32 - 1)
    notes["converted"] = f"{'16' if peak == 65535.0 else '32'}-bit integer, scaled by 1/{int(peak)}"
    return np.clip(a / peak, 0.0, 1.0)


def read_image(
    path: Path | str, channels: int = 3, max_pixels: Optional[int] = None
) -> Tuple[np.ndarray, Dict[str, Any]]:
    """(HxWxC float32 in [0, 1], notes on what was converted).  EXIF orientation is applied;
    grayscale, alpha (over white), palette, CMYK, 16-bit and float images are converted.
    The size is checked against ``max_pixels`` from the header, before decoding."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if p.is_dir():
        raise ImageError(f"{p}: is a folder (diip-run takes folders only as inputs, not here)")
    if not p.is_file():
        raise ImageError(f"{p}: no such file")
    notes: Dict[str, Any] = {}
    try:
        with Image.open(p) as opened:
            try:
                check_pixels(opened.height, opened.width, max_pixels)
            except ImageError as e:
                raise ImageError(f"{p}: {e}") from None
            notes["format"], notes["mode"] = opened.format, opened.mode
            opened.load()
            orientation = opened.getexif().get(0x0112, 1)  # EXIF Orientation; phones rotate this way
            im = ImageOps.exif_transpose(opened)
            if orientation not in (None, 1):
                notes["exif_orientation_applied"] = int(orientation)
            if im.mode in HIGH_DEPTH_MODES:
                a = _high_depth_to_unit(im, notes)[..., None]
                a = np.repeat(a, channels, axis=2) if channels == 3 else a
            else:
                if im.mode in ("P", "PA"):
                    im = im.convert("RGBA")
                if im.mode in ("RGBA", "LA", "La", "RGBa"):
                    im = im.convert("RGBA")
                    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(bg, im)
                    notes["alpha"] = "composited over white"
                im = im.convert("L" if channels == 1 else "RGB")
                a = np.asarray(im, dtype=np.float64) / 255.0
    except ImageError as e:
        raise ImageError(str(e) if str(e).startswith(str(p)) else f"{p}: {e}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{p}: not an image Pillow can read (PNG, JPEG, TIFF, ... expected)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{p}: refused as a possible decompression bomb ({str(e).splitlines()[0]})") from None
    except (OSError, ValueError, SyntaxError, MemoryError) as e:
        raise ImageError(
            f"{p}: cannot decode image ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    if a.ndim == 2:
        a = a[..., None]
    if min(a.shape[:2]) < MIN_SIDE:
        raise ImageError(f"{p}: image is {a.shape[1]}x{a.shape[0]}, smaller than {MIN_SIDE} px on a side")
    return a.astype(np.float32), notes


def load_image(path: Path | str, channels: int = 3, max_pixels: Optional[int] = None) -> np.ndarray:
    """HxWxC float32 in [0, 1] (``read_image`` without the notes)."""
    return read_image(path, channels, max_pixels)[0]


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
    pad = ((0, ph), (0, pw), (0, 0))
    if ph < h and pw < w:
        return np.pad(img, pad, mode="reflect"), (h, w)
    return np.pad(img, pad, mode="symmetric"), (h, w)


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


def encode_png(img: np.ndarray, path: Path | str) -> None:
    """HxWxC [0, 1] -> 8-bit PNG at ``path`` (not atomic: callers write to a temporary name)."""
    from PIL import Image

    a = (np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(path, format="PNG")


def save_image(path: Path, img: np.ndarray) -> None:
    """HxWxC [0, 1] -> 8-bit PNG, atomically."""
    write_atomic(Path(path), lambda tmp: encode_png(img, tmp))


def save_json(path: Path, data: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)

    write_atomic(Path(path), write)
