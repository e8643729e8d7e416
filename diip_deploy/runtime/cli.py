"""``diip-run``: restore images with an exported model, torch-free."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from .backends.base import BackendUnavailable, RunnerError
from .images import ImageError, load_image, save_image, save_json
from .loop import NonFiniteError
from .manifest import ManifestError
from .optim import OPTIMIZERS
from .progress import ProgressBar, save_before_after, save_history_plot
from .restorer import DEFAULT_MAX_PIXELS, STOP_SCOPES, Restorer, TileSettings
from .select import BACKENDS
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
@click.option("--tile", type=int, default=None, help="Tile size (a multiple of the model's); 0 = the whole image, "
              "where it fits. Default: the manifest's tile size.")
@click.option("--tile-overlap", type=int, default=None, help="Overlap between tiles. Default: a quarter of the tile.")
@click.option("--batch", type=int, default=8, show_default=True, help="Tiles per graph call.")
@click.option("--stop-scope", type=click.Choice(STOP_SCOPES), default="image", show_default=True,
              help="image: one stop for all tiles (summed loss, Laplacian of the blended image); tile: each tile its own.")
@click.option("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse larger images before any compute.")
@click.option("--threads", type=int, default=None, help="CPU threads for ONNX Runtime.")
@click.option("--steps-per-report", type=int, default=10, show_default=True, help="Progress refresh interval.")
@click.option("--save-plots", is_flag=True, help="Also write <stem>_curves.png and <stem>_before_after.png.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(inputs, model_dir, out_dir, backend, gradient, optimizer, lr, max_iters, stop, eps, slope_window, k_min,
         seed, tile, tile_overlap, batch, stop_scope, max_pixels, threads, steps_per_report, save_plots, quiet) -> None:
    """Restore INPUT images (PNG/JPEG) blindly with the Diffusion Image Prior.

    Images are restored in overlapping tiles of the model's tile size, each with its own
    noise seed and early stop, blended back smoothly.  Writes OUT/<stem>.png and
    OUT/<stem>.json per input.  Exits non-zero if any input failed.
    """
    try:
        if max_iters is not None and max_iters < 1 or slope_window is not None and slope_window < 1:
            raise click.BadParameter("--max-iters and --slope-window must be >= 1")
        if lr is not None and not 0 < lr < float("inf"):
            raise click.BadParameter("--lr must be finite and > 0")
        restorer = Restorer(model_dir, backend, threads,
                            TileSettings(tile=tile, overlap=tile_overlap, batch=batch, max_pixels=max_pixels,
                                         stop_scope=stop_scope),
                            lr=lr, optimizer=optimizer, gradient=gradient, max_iters=max_iters, stop=stop, eps=eps,
                            slope_window=slope_window, k_min=k_min, seed=seed)
        if not quiet:
            click.echo(f"diip-run: {restorer.selection.describe()}", err=True)
    except (ManifestError, BackendUnavailable, RunnerError, click.BadParameter, ValueError, OSError) as e:
        _fail(str(e).splitlines()[0])
        sys.exit(2)

    failures = 0
    for path in inputs:
        try:
            _restore_one(restorer, path, out_dir, steps_per_report, save_plots, quiet)
        except (ImageError, NonFiniteError, RunnerError, ValueError, RuntimeError) as e:
            failures += 1
            _fail(f"{path}: {str(e).splitlines()[0]}" if not str(e).startswith(str(path)) else str(e).splitlines()[0])
    restorer.close()
    sys.exit(1 if failures else 0)


def _restore_one(restorer: Restorer, path: Path, out_dir: Path, steps_per_report: int, save_plots: bool,
                 quiet: bool) -> None:
    img = load_image(path, restorer.manifest.channels, restorer.tiles.max_pixels)
    plan = restorer.plan(*img.shape[:2])
    by_tile = restorer.tiles.stop_scope == "tile" and len(plan) > 1
    desc = path.name if len(plan) == 1 else f"{path.name} ({len(plan)} tiles)"
    bar: Optional[ProgressBar] = (None if quiet else
                                  ProgressBar(len(plan) if by_tile else 1, restorer.cfg.max_iters, desc, steps_per_report))
    try:
        restored, report = restorer.restore_array(img, callback=bar)
    finally:
        if bar is not None:
            bar.close()
    report = {"input": str(path), **report}
    stem = path.stem
    save_image(out_dir / f"{stem}.png", restored)
    save_json(out_dir / f"{stem}.json", report)
    if save_plots:
        if "history" in report:
            save_history_plot(out_dir / f"{stem}_curves.png", report["history"], report["stop_iteration"], report["stop_reason"])
        save_before_after(out_dir / f"{stem}_before_after.png", img, restored)
    if not quiet:
        t = report["tiling"]
        click.echo(f"{path} -> {out_dir / (stem + '.png')}: {t['tiles']} tile(s), stopped at {report['stop_iteration']} "
                   f"({report['stop_reason']}), {report['iterations_run']} tile-iterations, {report['seconds']:.1f} s", err=True)


if __name__ == "__main__":
    main()
