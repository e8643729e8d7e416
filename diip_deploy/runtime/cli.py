"""``diip-run``: restore images with an exported model, torch-free."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from .backends.base import BackendUnavailable, RunnerError
from .images import ImageError, crop_to, from_model_range, load_image, pad_to_multiple, save_image, save_json, to_model_range
from .loop import NonFiniteError, RestoreConfig, restore
from .manifest import ManifestError, load_manifest
from .optim import OPTIMIZERS
from .progress import ProgressBar, save_before_after, save_history_plot
from .select import BACKENDS, open_chain, select_backend
from .stopping import STOP_MODES


def _fail(msg: str) -> None:
    click.echo(f"diip-run: error: {msg}", err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path), help="Export folder (manifest.json).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--backend", type=click.Choice(("auto",) + BACKENDS), default="auto", show_default=True)
@click.option("--gradient", type=click.Choice(("exact", "surrogate")), default=None, help="Default: the manifest's.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None, help="Default: the manifest's.")
@click.option("--lr", type=float, default=None, help="Learning rate. Default: the manifest's.")
@click.option("--max-iters", type=int, default=None, help="Iteration cap. Default: the manifest's.")
@click.option("--stop", type=click.Choice(STOP_MODES), default=None, help="Stopping criterion. Default: the manifest's (auto).")
@click.option("--eps", type=float, default=None, help="Slope threshold. Default: the manifest's (1e-3).")
@click.option("--slope-window", type=int, default=None, help="Iterations in the slope's moving average.")
@click.option("--k-min", type=int, default=None, help="Earliest Laplacian-peak stop. Default: the manifest's.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads for ONNX Runtime.")
@click.option("--steps-per-report", type=int, default=10, show_default=True, help="Progress refresh interval.")
@click.option("--save-plots", is_flag=True, help="Also write <stem>_curves.png and <stem>_before_after.png.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(inputs, model_dir, out_dir, backend, gradient, optimizer, lr, max_iters, stop, eps, slope_window, k_min,
         seed, threads, steps_per_report, save_plots, quiet) -> None:
    """Restore INPUT images (PNG/JPEG) blindly with the Diffusion Image Prior.

    Writes OUT/<stem>.png and OUT/<stem>.json per input.  Exits non-zero if any input failed.
    """
    try:
        manifest = load_manifest(model_dir)
        cfg = RestoreConfig.from_defaults(manifest.defaults, lr=lr, optimizer=optimizer, gradient=gradient,
                                          max_iters=max_iters, stop=stop, eps=eps, slope_window=slope_window,
                                          k_min=k_min, seed=seed)
        if cfg.max_iters < 1 or not 0 < cfg.lr < float("inf") or cfg.slope_window < 1:
            raise click.BadParameter("--max-iters and --slope-window must be >= 1, --lr finite and > 0")
        selection = select_backend(manifest, backend)
        if not quiet:
            click.echo(f"diip-run: {selection.describe()}", err=True)
        chain = open_chain(manifest, selection.backend, cfg.gradient, threads)
    except (ManifestError, BackendUnavailable, RunnerError, click.BadParameter, ValueError, OSError) as e:
        _fail(str(e).splitlines()[0])
        sys.exit(2)

    failures = 0
    for path in inputs:
        try:
            _restore_one(path, manifest, chain, cfg, out_dir, selection.backend, steps_per_report, save_plots, quiet)
        except (ImageError, NonFiniteError, RunnerError, ValueError, RuntimeError) as e:
            failures += 1
            _fail(f"{path}: {str(e).splitlines()[0]}" if not str(e).startswith(str(path)) else str(e).splitlines()[0])
    chain.close()
    sys.exit(1 if failures else 0)


def _restore_one(path: Path, manifest, chain, cfg: RestoreConfig, out_dir: Path, backend: str,
                 steps_per_report: int, save_plots: bool, quiet: bool) -> None:
    img = load_image(path, manifest.channels)
    padded, size = pad_to_multiple(img, manifest.size_multiple)
    bar: Optional[ProgressBar] = None if quiet else ProgressBar(cfg.max_iters, path.name, steps_per_report)
    try:
        result = restore(chain, to_model_range(padded), cfg, callback=bar)
    finally:
        if bar is not None:
            bar.close()
    restored = crop_to(from_model_range(result.x0), size)
    stem = path.stem
    report = {
        "input": str(path), "stop_iteration": result.stop_iteration, "stop_reason": result.stop_reason,
        "iterations_run": result.iterations_run, "seconds": round(result.seconds, 3), "backend": backend,
        "gradient": cfg.gradient, "seed": cfg.seed,
        "settings": {"lr": cfg.lr, "optimizer": cfg.optimizer, "max_iters": cfg.max_iters, "stop": cfg.stop,
                     "eps": cfg.eps, "slope_window": cfg.slope_window, "k_min": cfg.k_min,
                     "steps": len(manifest.chain_spec.timesteps)},
        "size": [int(size[1]), int(size[0])], "padded_size": [int(padded.shape[1]), int(padded.shape[0])],
        "history": result.history,
    }
    peaks = [getattr(r, "peak_device_bytes", 0) for r in chain.runners.values()]
    if max(peaks, default=0):
        report["peak_device_memory_mb"] = round(max(peaks) / 2**20, 1)
        if not quiet:
            click.echo(f"{path}: peak device memory {report['peak_device_memory_mb']} MB", err=True)
    if save_plots:
        save_history_plot(out_dir / f"{stem}_curves.png", result.history, result.stop_iteration, result.stop_reason)
        save_before_after(out_dir / f"{stem}_before_after.png", img, restored)
    save_image(out_dir / f"{stem}.png", restored)
    save_json(out_dir / f"{stem}.json", report)
    if not quiet:
        click.echo(f"{path} -> {out_dir / (stem + '.png')}: stopped at {result.stop_iteration} ({result.stop_reason}), "
                   f"{result.iterations_run} iterations, {result.seconds:.1f} s", err=True)


if __name__ == "__main__":
    main()
