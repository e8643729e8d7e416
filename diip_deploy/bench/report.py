"""The benchmark's outputs people look at: a markdown table in the paper's shape,
PSNR-versus-iteration curves with the stops marked, and before/after grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..runtime.images.codec import save_image, write_atomic

METRICS = (
    ("psnr", "PSNR", "{:.2f}"),
    ("ssim", "SSIM", "{:.3f}"),
    ("haarpsi", "HaarPSI", "{:.3f}"),
    ("lpips", "LPIPS", "{:.3f}"),
)


def _fmt(v, f):
    return "n/a" if v is None else f.format(v)


def markdown_table(report: Dict[str, Any]) -> str:
    tasks = list(report["tasks"])
    methods: list = []
    for t in tasks:
        for m in report["tasks"][t]["methods"]:
            if m not in methods:
                methods.append(m)
    head = "| method | " + " | ".join(f"{t} {label}" for t in tasks for _, label, _ in METRICS) + " |"
    sep = "|---|" + "---|" * (len(tasks) * len(METRICS))
    rows = []
    for m in methods:
        cells = []
        for t in tasks:
            mean = report["tasks"][t]["methods"].get(m, {}).get("mean")
            cells += [_fmt(mean.get(k) if mean else None, f) if mean else "" for k, _, f in METRICS]
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    timing = [
        "",
        "| method | " + " | ".join(f"{t} s/image" for t in tasks) + " | s/iteration |",
        "|---|" + "---|" * (len(tasks) + 1),
    ]
    for m in methods:
        secs, spi = [], []
        for t in tasks:
            mean = report["tasks"][t]["methods"].get(m, {}).get("mean", {})
            secs.append(_fmt(mean.get("seconds"), "{:.1f}"))
            if mean.get("sec_per_iter") is not None:
                spi.append(mean["sec_per_iter"])
        timing.append(f"| {m} | " + " | ".join(secs) + f" | {_fmt(float(np.mean(spi)) if spi else None, '{:.3f}')} |")
    ds = report["dataset"]
    lines = [
        "# diip-bench results",
        "",
        f"Data: {ds['name']}; {ds['count']} images: {', '.join(ds['images'])}.",
        f"Model: {report['model'].get('source')} ({report['model'].get('parameters')} parameters), "
        f"S = {report['chain_steps']} DDIM steps; DIIP settings: {report['diip_settings']}.",
        "Mean over images. LPIPS is n/a unless its backbone weights are already on disk.",
        "",
        head,
        sep,
        *rows,
        *timing,
    ]
    if report.get("runtime_vs_torch"):
        lines += [
            "",
            "Runtime (ONNX Runtime, CPU) against the torch reference, same model and size, alternated in one run:",
            "",
            "| gradient | graphs | ORT s/iter | torch s/iter | ratio |",
            "|---|---|---|---|---|",
        ]
        for r in report["runtime_vs_torch"]:
            lines.append(
                f"| {r['gradient']} | {r['runtime_graphs']} | {r['ort_s_per_iter']} | {r['torch_s_per_iter']} "
                f"| {r['ratio_ort_over_torch']} |"
            )
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_curves(path: Path, task: str, curves: Dict[str, Dict[str, Any]], dip_runs: Dict[str, Any]) -> None:
    """One panel per image: PSNR per iteration, each criterion's stop and the oracle marked."""
    plt = _plt()
    names = list(next(iter(curves.values())).keys()) if curves else []
    n = len(names)
    cols = min(4, max(1, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    colours = {"auto": "r", "slope": "m", "laplacian": "c", "oracle": "g"}
    for ax, name in zip(axes.ravel(), names):
        for label, per_image in curves.items():
            h = per_image[name]
            ax.plot(h["psnr"], lw=1.2, label=label)
            for rule, (k, _) in h["stops"].items():
                if label.endswith("surrogate") or len(curves) == 1:
                    ax.axvline(
                        k, color=colours[rule], ls="--" if rule != "oracle" else ":", lw=0.9, label=f"{rule} stop"
                    )
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("iteration", fontsize=7)
        ax.set_ylabel("PSNR dB", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    if n:
        axes.ravel()[0].legend(fontsize=6)
    fig.suptitle(f"{task}: DIIP PSNR per iteration, stops marked", fontsize=9)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)


def save_grid(
    path: Path, task: str, per_image: Dict[str, Dict[str, np.ndarray]], methods: Dict[str, Dict[str, Any]]
) -> None:
    """Rows: images.  Columns: clean, degraded, DIIP auto, DIIP oracle, DIP, best classic."""
    cols = ["DIIP surrogate (auto stop)", "DIIP surrogate (oracle stop)"]
    cols += [m for m in methods if m.startswith("DIP (fixed")][:1]
    classic = [m for m in methods if not m.startswith(("DIIP", "DIP", "input"))]
    if classic:
        best = max(classic, key=lambda m: np.mean([v["psnr"] for v in methods[m]["per_image"].values()]))
        cols.append(best)
    rows = [
        [d["clean"], d["degraded"]] + [methods[c]["outputs"][name] for c in cols if c in methods]
        for name, d in per_image.items()
    ]
    save_image(path, image_grid(rows))
    (path.with_suffix(".txt")).write_text(
        "columns: clean | degraded | " + " | ".join(c for c in cols if c in methods) + "\n"
    )


def image_grid(rows: List[List[np.ndarray]], zoom: int = 2) -> np.ndarray:
    """HxWx3 images of one size as a grid, rows of them, with white 2-pixel gaps, each
    pixel repeated ``zoom`` times so that small crops can be looked at."""
    lines = []
    for tiles in rows:
        gap = np.ones((tiles[0].shape[0], 2, 3))
        lines.append(np.concatenate(sum(([t, gap] for t in tiles), [])[:-1], axis=1))
        lines.append(np.ones((2, lines[-1].shape[1], 3)))
    grid = np.concatenate(lines[:-1], axis=0)
    return np.repeat(np.repeat(grid, zoom, 0), zoom, 1)


def emit(report: Dict[str, Any], path: Optional[Path]) -> None:
    """A benchmark script's result: printed as JSON, and written atomically if asked."""
    import json

    from ..runtime.images.codec import save_json

    print(json.dumps(report, indent=1))
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_json(Path(path), report)
