"""``diip-tune``: choose a model's stopping defaults on photos it was trained on, never on
the held-out ones, and write them into its manifest with the scores beside them.

``record`` runs DIIP once per validation crop to the iteration cap (stop = none) and keeps
each crop's loss, Laplacian-variance and PSNR histories in a JSON file.  ``choose``
applies every candidate stopping setting to those histories with the runtime's own
``decide`` (so the choice is reproducible from the file alone), keeps the settings that
lose at most ``--max-loss-db`` against the input on every task, and picks the one with
the best mean auto-stop PSNR over all tasks (``tune_scoring.py``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..runtime.optimise.guard import residual_correlation
from .degrade import TASKS
from .metrics import psnr
from .saturated import channel_mean_error

TUNE_TASKS = ("noise25", "jpeg10", "sr4", "waterdrop")
SCALES = (1.0, 0.5, 0.25)  # pyramid levels the crops are cut at


def validation_crops(
    n_per_task: int, size: int, seed: int = 0, opencv_doc: Optional[str] = None, held_out: bool = False
) -> List[Tuple[str, np.ndarray]]:
    """(name, clean crop) pairs from the training split (or, to report, never to choose,
    the held-out one), at several pyramid scales."""
    from PIL import Image

    from ..train.photos import default_split

    train, held = default_split(opencv_doc)
    if held_out:
        train = held
    names = sorted(train)
    rng = np.random.default_rng(seed)
    out: List[Tuple[str, np.ndarray]] = []
    while len(out) < n_per_task:
        name = names[int(rng.integers(len(names)))]
        scale = SCALES[len(out) % len(SCALES)]
        img = train[name]
        h, w = int(img.shape[0] * scale), int(img.shape[1] * scale)
        if min(h, w) < size:
            continue
        small = (
            np.asarray(Image.fromarray((img * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)) / 255.0
        )
        y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        out.append((f"{name}@{scale}:{y},{x}", small[y : y + size, x : x + size].astype(np.float64)))
    return out


def tuning_crops(
    n_per_task: int, size: int, seed: int = 0, held_out: bool = False, saturated: int = 0
) -> List[Tuple[str, np.ndarray]]:
    """The crops ``record`` restores: ``validation_crops``, then ``saturated`` crops with
    saturated colours (``saturated.saturated_crops``: half the most saturated windows of the
    training photos, half recoloured copies), which ordinary crops rarely hold."""
    crops = validation_crops(n_per_task, size, seed, held_out=held_out)
    if saturated:
        if held_out:
            raise ValueError("saturated crops come from the training photos: not with --held-out")
        from .saturated import saturated_crops

        crops += saturated_crops(saturated // 2, saturated - saturated // 2, size, seed)
    return crops


def record(
    export_dir: Path,
    n_per_task: int,
    size: int,
    tasks: Sequence[str],
    lr: Optional[float],
    max_iters: Optional[int],
    batch: int,
    threads: Optional[int],
    seed: int = 0,
    log=print,
    held_out: bool = False,
    backend: str = "ort-cpu",
    precision: str = "fp32",
    overrides: Optional[Dict[str, Any]] = None,
    saturated: int = 0,
) -> Dict[str, Any]:
    """Every crop of every task run to the cap; histories (no images) kept per crop.
    ``backend`` / ``precision``: the variant to run (diip-variants records each);
    ``overrides``: other settings over the export's (e.g. Adam's betas)."""
    from ..manifest import load_manifest
    from ..runtime.backends.select import open_chain
    from ..runtime.optimise.loop import restore_iter

    manifest = load_manifest(export_dir)
    given = dict(batch=batch, lr=lr, max_iters=max_iters, precision=precision, **(overrides or {}))
    cfg = replace(manifest.settings(**given), stop="none")
    chain = open_chain(
        manifest,
        backend,
        cfg.gradient,
        threads,
        cfg.steps_per_eval == 1,
        precision=precision,
        clamp_gradient=cfg.clamp_gradient,
    )
    crops = tuning_crops(n_per_task, size, seed, held_out, saturated)
    samples: List[Dict[str, Any]] = []
    ys, cleans = [], []
    for task in tasks:
        for i, (name, clean) in enumerate(crops):
            y = TASKS[task](clean, seed=seed + i)
            samples.append(
                {
                    "task": task,
                    "crop": name,
                    "input_psnr": psnr(clean, y),
                    "psnr": [],
                    "channel_mean_error": [],
                    "correlation": [],
                    "loss": [],
                    "laplacian_var": [],
                }
            )
            ys.append((y.transpose(2, 0, 1) * 2 - 1).astype(np.float32))
            cleans.append(clean)
    t0 = time.perf_counter()
    logged = [0]

    def keep(info: Dict[str, Any]) -> None:
        for j, i in enumerate(info["index"]):
            x = np.clip((info["x0"][j].transpose(1, 2, 0) + 1) / 2, 0, 1)
            samples[i]["psnr"].append(round(psnr(cleans[i], x), 4))
            samples[i]["channel_mean_error"].append(round(channel_mean_error(x, cleans[i]), 2))
            samples[i]["correlation"].append(round(residual_correlation(info["x0"][j], ys[i]), 4))
        if info["done"] >= logged[0] + 32:
            logged[0] = info["done"]
            log(f"  {info['done']}/{info['total']} crops, {time.perf_counter() - t0:.0f} s")

    for i, res in restore_iter(chain, np.stack(ys), cfg, [(seed, i) for i in range(len(ys))], batch, keep):
        samples[i]["loss"] = res.history["loss"]
        samples[i]["laplacian_var"] = res.history["laplacian_var"]
    chain.close()
    return {
        "tool": "diip-tune record",
        "export": str(export_dir),
        "crop_size": size,
        "scales": list(SCALES),
        "seed": seed,
        "split": (
            "HELD-OUT photos: for reporting only, never for choosing"
            if held_out
            else "training photos only (diip_deploy/train/photos.py)"
        ),
        "n_per_task": n_per_task,
        "saturated": saturated,
        "settings": {
            "lr": cfg.lr,
            "lr_final": cfg.lr_final,
            "adam_betas": [cfg.adam_beta1, cfg.adam_beta2],
            "steps_per_eval": cfg.steps_per_eval,
            "max_iters": cfg.max_iters,
            "gradient": cfg.gradient,
            "clamp_gradient": cfg.clamp_gradient,
            "steps": len(chain.spec.timesteps),
            "timesteps": list(chain.spec.timesteps),  # the chain run, a study's included
            "backend": backend,
            "precision": precision,
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "samples": samples,
    }
