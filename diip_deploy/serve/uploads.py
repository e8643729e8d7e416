"""An upload checked before it becomes a job: size, pixels, decodability, options.

Every check gives one line for the client.  The pixel count is read from the header
before any decoding (a decompression bomb never reaches the decoder), and the options
are held to ``diip-run``'s rules: the same settings declarations, the same names.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

from ..manifest import Manifest
from ..settings import SettingsError, specs, unknown_name


class UploadError(ValueError):
    """What is wrong with an upload, in one line, and the HTTP status that says so."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp", "PPM": ".ppm"}


@dataclass(frozen=True)
class Limits:
    """What one upload may ask of the server: bytes, pixels, and the work of its job (the
    iteration cap and restarts, which multiply a job's time; ``--job-timeout`` bounds the rest)."""

    max_bytes: int = 50 * 2**20
    max_pixels: int = 50_000_000
    max_iters: int = 1000
    max_restarts: int = 4


def parse_options(text: str, manifest: Manifest, limits: Limits = Limits()) -> Dict[str, Any]:
    """A JSON object of ``diip-run`` option names (``max_iters`` or ``max-iters``) checked
    by the settings' own rules, together against the model (tile sizes), and against this
    server's limits on a job's work."""
    from ..runtime.restorer import Restorer

    try:
        raw = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as e:
        raise UploadError(f"options: not JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(raw, dict):
        raise UploadError("options: must be a JSON object of diip-run option names")
    allowed = {n: s for n, s in specs(manifest.settings_class).items() if s.cli}
    options: Dict[str, Any] = {}
    try:
        for key, value in raw.items():
            name = str(key).replace("-", "_")
            if name not in allowed:
                raise unknown_name(str(key), allowed)
            options[name] = allowed[name].check(value)
        _, settings = Restorer.check(manifest.root, manifest, **options)
    except (SettingsError, ValueError) as e:
        raise UploadError(f"options: {str(e).splitlines()[0]}") from None
    for name, limit in (("max_iters", limits.max_iters), ("restarts", limits.max_restarts)):
        if getattr(settings, name) > limit:
            raise UploadError(f"options: {name} {getattr(settings, name)} is over this server's limit of {limit}")
    return options


def check_image(data: bytes, limits: Limits, channels: int, scratch: Path) -> Path:
    """Write an upload to ``scratch`` (a folder of the server's) under a name of its own,
    after the size and header checks, then decode it as ``diip-run`` would; returns the
    file.  Nothing of the client's filename reaches the path."""
    import uuid

    from PIL import Image, UnidentifiedImageError

    from ..runtime.images.codec import ImageError, read_image

    if len(data) > limits.max_bytes:
        raise UploadError(f"image: {len(data)} bytes, over the limit of {limits.max_bytes}", 413)
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = im.format, im.size
    except UnidentifiedImageError:
        raise UploadError("image: not an image (PNG, JPEG, TIFF, BMP, WebP or PPM expected)", 415) from None
    except Image.DecompressionBombError:
        raise UploadError(
            f"image: refused as a decompression bomb (over the limit of {limits.max_pixels} pixels)", 413
        ) from None
    except Exception as e:
        raise UploadError(f"image: unreadable header ({type(e).__name__})", 400) from None
    if w * h > limits.max_pixels:
        raise UploadError(f"image: {w}x{h} is over the limit of {limits.max_pixels} pixels", 413)
    if fmt not in SUFFIX:
        raise UploadError(f"image: {fmt} is not accepted (PNG, JPEG, TIFF, BMP, WebP or PPM)", 415)
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"{uuid.uuid4().hex}{SUFFIX[fmt]}"
    path.write_bytes(data)
    try:
        read_image(path, channels, limits.max_pixels)
    except ImageError as e:
        path.unlink(missing_ok=True)
        raise UploadError(f"image: {str(e).split(': ', 1)[-1]}", 400) from None
    return path
