"""Load a diffusers UNet2DModel and its noise schedule, safetensors only.

Accepted sources: a DDPMPipeline-style folder (model_index.json, unet/, scheduler/),
a bare UNet folder (config.json + *.safetensors, optional scheduler_config.json beside
it), or a hub id, which is fetched (json + safetensors files only) and then read as a
local folder.  Pickled checkpoints (.bin, .ckpt, .pt) are refused, never unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..manifest import sha256_file
from ..schedule import PREDICTION_TYPES, linear_alphas_cumprod, scaled_linear_alphas_cumprod, squaredcos_alphas_cumprod

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


class ModelLoadError(Exception):
    """The model source cannot be used; the message says why in one line."""


@dataclass
class LoadedModel:
    unet: Any  # diffusers.UNet2DModel, eval mode, no parameter requires grad
    alphas_cumprod: np.ndarray  # float64 [num_train_timesteps]
    prediction_type: str
    source: str
    weights_sha256: str
    unet_config: Dict[str, Any]


def alphas_from_scheduler_config(cfg: Dict[str, Any]) -> np.ndarray:
    """alphas_cumprod as diffusers' DDPM/DDIM schedulers compute it from their config."""
    n = int(cfg.get("num_train_timesteps", 1000))
    if cfg.get("trained_betas") is not None:
        return np.cumprod(1.0 - np.asarray(cfg["trained_betas"], dtype=np.float64))
    kind = cfg.get("beta_schedule", "linear")
    start, end = float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02))
    if kind == "linear":
        return linear_alphas_cumprod(start, end, n)
    if kind == "scaled_linear":
        return scaled_linear_alphas_cumprod(start, end, n)
    if kind == "squaredcos_cap_v2":
        return squaredcos_alphas_cumprod(n)
    raise ModelLoadError(f"unsupported beta_schedule {kind!r} (linear, scaled_linear, squaredcos_cap_v2)")


def _resolve_hub(model_id: str) -> Path:
    """Download only configs and safetensors of a hub repo (needs network)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as e:  # network, auth, missing repo: one line for the user
        raise ModelLoadError(
            f"cannot fetch {model_id!r} from the hub: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None


def _find_unet_dir(root: Path) -> tuple:
    """(unet folder, scheduler config path or None) for a pipeline or bare-UNet folder."""
    if (root / "model_index.json").exists():
        unet_dir = root / "unet"
        if not (unet_dir / "config.json").exists():
            raise ModelLoadError(f"{root}: model_index.json but no unet/config.json")
        sched = root / "scheduler" / "scheduler_config.json"
        return unet_dir, (sched if sched.exists() else None)
    if (root / "config.json").exists():
        sched = root / "scheduler_config.json"
        return root, (sched if sched.exists() else None)
    if (root / "unet" / "config.json").exists():
        sched = root / "scheduler" / "scheduler_config.json"
        return root / "unet", (sched if sched.exists() else None)
    raise ModelLoadError(f"{root}: not a diffusers pipeline or UNet folder (no model_index.json or config.json)")


def folder_alphas_cumprod(root: Path) -> np.ndarray:
    """alphas_cumprod of a local model folder's schedule, found as ``load_model`` finds it,
    without loading the weights."""
    _, sched_path = _find_unet_dir(root)
    return alphas_from_scheduler_config(json.loads(sched_path.read_text()) if sched_path else {})


def load_model(source: str, prediction_type: Optional[str] = None) -> LoadedModel:
    """Load a UNet2DModel and its schedule from a folder or hub id."""
    path = Path(source)
    root = path if path.exists() else None
    if root is None:
        if source.startswith((".", "/")) or source.count("/") != 1:
            raise ModelLoadError(f"{source}: no such folder, and not a hub id of the form owner/name")
        root = _resolve_hub(source)
    if not root.is_dir():
        raise ModelLoadError(f"{source}: expected a model folder, got a file")
    unet_dir, sched_path = _find_unet_dir(root)
    weights = sorted(unet_dir.glob("*.safetensors"))
    if not weights:
        pickled = [p.name for p in unet_dir.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = f" (found pickled {', '.join(pickled)}: convert to safetensors first)" if pickled else ""
        raise ModelLoadError(f"{unet_dir}: no .safetensors weights{hint}")
    cfg = json.loads((unet_dir / "config.json").read_text())
    if cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ModelLoadError(f"{unet_dir}: {cfg.get('_class_name')} is not a UNet2DModel (pixel-space DDPMs only)")
    from diffusers import UNet2DModel

    try:
        unet = UNet2DModel.from_pretrained(str(unet_dir), use_safetensors=True)
    except Exception as e:
        raise ModelLoadError(f"{unet_dir}: cannot load UNet2DModel: {str(e).splitlines()[0]}") from None
    unet.eval().requires_grad_(False)
    sched_cfg: Dict[str, Any] = json.loads(sched_path.read_text()) if sched_path else {}
    pred = prediction_type or sched_cfg.get("prediction_type", "epsilon")
    if pred not in PREDICTION_TYPES:
        raise ModelLoadError(f"unsupported prediction_type {pred!r} (one of {', '.join(PREDICTION_TYPES)})")
    digest = hashlib.sha256()
    for w in weights:
        digest.update(sha256_file(w).encode())
    return LoadedModel(
        unet=unet,
        alphas_cumprod=alphas_from_scheduler_config(sched_cfg),
        prediction_type=pred,
        source=source,
        weights_sha256=digest.hexdigest(),
        unet_config=dict(unet.config),
    )


def size_multiple(unet_config: Dict[str, Any]) -> int:
    """Height and width must be multiples of 2^(number of downsampling levels)."""
    return 2 ** (len(unet_config["block_out_channels"]) - 1)
