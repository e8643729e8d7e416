"""``diip-bench``: DIIP against the baselines a user would pick instead, per degradation,
and how close its self-stopping comes to the best possible stop.

One DIIP run per image and gradient mode records the whole history (stop = none); every
stopping rule is then applied to that history with the same pure functions the runtime
uses online, so auto/slope/Laplacian/oracle stops are compared on identical runs.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..runtime.images.codec import from_model_range, save_json, to_model_range
from ..runtime.optimise.loop import restore
from ..runtime.optimise.stopping import decide
from ..settings import RestoreSettings, StopRule
from .classic import CLASSIC
from .degrade import TASKS
from .metrics import haarpsi, lpips_or_none, psnr, ssim

STOP_RULES: Tuple[StopRule, ...] = ("auto", "slope", "laplacian")


@dataclass
class BenchSettings:
    tasks: Sequence[str] = ("noise25", "jpeg10", "sr4", "waterdrop")
    lr: Optional[float] = None
    max_iters: Optional[int] = None
    eps: Optional[float] = None
    slope_window: Optional[int] = None
    k_min: Optional[int] = None
    exact_tasks: Sequence[str] = ("noise25",)
    dip_iters: int = 1000
    dip_every: int = 10
    seed: int = 0
    threads: Optional[int] = None
    dip: bool = True
    classic: bool = True


def _metrics(clean: np.ndarray, out: np.ndarray) -> Dict[str, Optional[float]]:
    out = np.clip(out, 0, 1)
    return {
        "psnr": psnr(clean, out),
        "ssim": ssim(clean, out),
        "haarpsi": haarpsi(clean, out),
        "lpips": lpips_or_none(clean, out),
    }


def diip_history(chain, y: np.ndarray, clean: np.ndarray, cfg: RestoreSettings) -> Dict[str, Any]:
    """One run to max_iters with every iteration's reconstruction and PSNR kept."""
    xs: List[np.ndarray] = []
    psnrs: List[float] = []

    def keep(info):
        x = from_model_range(info["x0"][:1])
        xs.append(x)
        psnrs.append(psnr(clean, x))

    t0 = time.perf_counter()
    (r,) = restore(chain, to_model_range(y.astype(np.float32)), replace(cfg, stop="none"), callback=keep)
    sec = time.perf_counter() - t0
    stops: Dict[str, Tuple[int, int]] = {}
    for rule in STOP_RULES:
        d = decide(r.history["loss"], r.history["laplacian_var"], replace(cfg, stop=rule))
        last = len(xs) - 1
        stops[rule] = (d.iteration, d.detected_at) if d else (last, last)
    best = int(np.argmax(psnrs))
    stops["oracle"] = (best, best)
    return {
        "xs": xs,
        "psnr": psnrs,
        "stops": stops,
        "sec_per_iter": sec / len(xs),
        "loss": r.history["loss"],
        "laplacian_var": r.history["laplacian_var"],
    }


def dip_history(y: np.ndarray, clean: np.ndarray, iters: int, every: int, seed: int) -> Dict[str, Any]:
    from .dip import run_dip

    psnrs: List[float] = []
    snaps: Dict[int, np.ndarray] = {}
    best: Dict[str, Any] = {"psnr": -1.0, "k": 0, "x": y}

    def keep(info):
        p = psnr(clean, np.clip(info["x"], 0, 1))
        psnrs.append(p)
        if (info["k"] + 1) % every == 0:
            snaps[info["k"]] = info["x"].copy()
        if p > best["psnr"]:
            best.update(psnr=p, k=info["k"], x=info["x"].copy())

    t0 = time.perf_counter()
    run_dip(y, iterations=iters, seed=seed, callback=keep)
    return {"psnr": psnrs, "snaps": snaps, "best": best, "sec_per_iter": (time.perf_counter() - t0) / iters}


def run_benchmark(
    export_dir: Path,
    images: List[Tuple[str, np.ndarray]],
    settings: BenchSettings,
    out_dir: Path,
    dataset: str,
    model_dir: Optional[str] = None,
    log=print,
) -> Dict[str, Any]:
    from ..runtime import load_manifest, open_chain

    manifest = load_manifest(export_dir)
    cfg = manifest.settings(
        gradient="surrogate",
        lr=settings.lr,
        max_iters=settings.max_iters,
        eps=settings.eps,
        slope_window=settings.slope_window,
        k_min=settings.k_min,
        seed=settings.seed,
    )
    chains = {
        g: open_chain(manifest, "ort-cpu", g, settings.threads, clamp_gradient=cfg.clamp_gradient)
        for g in ("surrogate", "exact")
        if g == "surrogate" or settings.exact_tasks
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    report: Dict[str, Any] = {
        "benchmark": "diip-bench",
        "dataset": {
            "name": dataset,
            "count": len(images),
            "images": [n for n, _ in images],
            "size": list(images[0][1].shape[:2]) if images else None,
        },
        "model": manifest.data["model"],
        "chain_steps": len(manifest.chain_spec.timesteps),
        "diip_settings": cfg.as_dict(),
        "settings": asdict(settings),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "tasks": {},
    }
    for task in settings.tasks:
        deg = TASKS[task]
        log(f"[{task}] {deg.label} on {len(images)} images")
        methods: Dict[str, Dict[str, Any]] = {}
        curves: Dict[str, Dict[str, Any]] = {}
        per_image: Dict[str, Dict[str, Any]] = {}

        def add(method: str, name: str, clean: np.ndarray, out: np.ndarray, **extra):
            m = methods.setdefault(method, {"per_image": {}, "outputs": {}})
            m["per_image"][name] = {**_metrics(clean, out), **extra}
            m["outputs"][name] = np.clip(out, 0, 1)

        dip_runs = {}
        for i, (name, clean) in enumerate(images):
            y = deg(clean, seed=settings.seed + i)
            per_image[name] = {"clean": clean, "degraded": y}
            add("input (degraded)", name, clean, y)
            grads = ["surrogate"] + (["exact"] if task in settings.exact_tasks else [])
            for g in grads:
                h = diip_history(chains[g], y, clean, replace(cfg, gradient=g))
                curves.setdefault(f"DIIP {g}", {})[name] = h
                for rule, (k, detected) in h["stops"].items():
                    label = f"DIIP {g} ({'oracle stop' if rule == 'oracle' else rule + ' stop'})"
                    iters = detected + 1
                    add(
                        label,
                        name,
                        clean,
                        h["xs"][k],
                        stop_iteration=k,
                        iterations=iters,
                        seconds=round(iters * h["sec_per_iter"], 3),
                        sec_per_iter=round(h["sec_per_iter"], 4),
                    )
                log(
                    f"  {name} DIIP {g}: input {psnr(clean, y):.2f} dB "
                    f"-> auto {psnr(clean, h['xs'][h['stops']['auto'][0]]):.2f} "
                    f"(k={h['stops']['auto'][0]}), oracle {max(h['psnr']):.2f} (k={h['stops']['oracle'][0]})"
                )
            if settings.dip:
                dh = dip_history(y, clean, settings.dip_iters, settings.dip_every, settings.seed + i)
                dip_runs[name] = dh
                add(
                    "DIP (oracle stop)",
                    name,
                    clean,
                    dh["best"]["x"],
                    stop_iteration=dh["best"]["k"],
                    iterations=settings.dip_iters,
                    seconds=round(dh["sec_per_iter"] * settings.dip_iters, 3),
                    sec_per_iter=round(dh["sec_per_iter"], 4),
                )
            if settings.classic:
                for cname, fn in CLASSIC.get(deg.name, {}).items():
                    t0 = time.perf_counter()
                    out = fn(y)
                    add(cname, name, clean, out, seconds=round(time.perf_counter() - t0, 3))
        if dip_runs:  # DIP at one fixed iteration count, tuned on this set (the mean-PSNR peak)
            ks = sorted(next(iter(dip_runs.values()))["snaps"])
            mean_curve = [np.mean([dh["psnr"][k] for dh in dip_runs.values()]) for k in ks]
            k_fixed = ks[int(np.argmax(mean_curve))]
            for name, clean in images:
                dh = dip_runs[name]
                add(
                    f"DIP (fixed {k_fixed + 1} iters)",
                    name,
                    clean,
                    dh["snaps"][k_fixed],
                    stop_iteration=k_fixed,
                    iterations=k_fixed + 1,
                    seconds=round(dh["sec_per_iter"] * (k_fixed + 1), 3),
                    sec_per_iter=round(dh["sec_per_iter"], 4),
                )
        summary = {}
        for method, m in methods.items():
            vals = list(m["per_image"].values())
            mean = {
                k: (float(np.mean([v[k] for v in vals])) if all(v.get(k) is not None for v in vals) else None)
                for k in ("psnr", "ssim", "haarpsi", "lpips")
            }
            for k in ("seconds", "sec_per_iter", "iterations", "stop_iteration"):
                if all(k in v for v in vals):
                    mean[k] = float(np.mean([v[k] for v in vals]))
            summary[method] = {"mean": mean, "per_image": m["per_image"]}
        report["tasks"][task] = {"degradation": deg.label, "methods": summary}
        from .report import save_curves, save_grid

        save_curves(out_dir / f"curves_{task}.png", task, curves, dip_runs)
        save_grid(out_dir / f"grid_{task}.png", task, per_image, methods)
    if model_dir:
        from .speed import runtime_vs_torch

        log("timing the runtime against the torch reference ...")
        report["runtime_vs_torch"] = runtime_vs_torch(
            model_dir,
            str(export_dir),
            size=int(images[0][1].shape[0]),
            threads=settings.threads or 2,
            rounds=3,
            iters=2,
        )
    for c in chains.values():
        c.close()
    from .report import markdown_table

    save_json(out_dir / "results.json", report)
    (out_dir / "results.md").write_text(markdown_table(report))
    return report
