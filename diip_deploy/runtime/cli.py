"""``diip-run``: restore images with an exported model, torch-free.

Exit codes: 0 all done, 1 some inputs failed, 2 usage or model error, 130 interrupted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import click

from .backends.base import BackendUnavailable, RunnerError
from .cli_errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, OneLineErrors
from .images import ImageError
from .jobs import restore_job, summary_line
from .loop import NonFiniteError
from .manifest import ManifestError
from .optim import OPTIMIZERS
from .outputs import OutputError, check_writable, expand_inputs, is_complete, plan_outputs
from .restorer import DEFAULT_MAX_PIXELS, LOOPS, STOP_SCOPES, Restorer, TileSettings
from .select import BACKENDS, PRECISIONS
from .stopping import SLOPE_FITS, STOP_MODES

POSITIVE = click.FloatRange(min=0.0, min_open=True)


def _fail(msg: str) -> None:
    click.echo(f"diip-run: error: {msg}", err=True)


def _warn(msg: str) -> None:
    click.echo(f"diip-run: warning: {msg}", err=True)


@click.command(cls=OneLineErrors, name="diip-run", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path), help="Export folder (manifest.json).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--backend", type=click.Choice(("auto",) + BACKENDS), default="auto", show_default=True)
@click.option("--gradient", type=click.Choice(("exact", "surrogate")), default=None, help="Default: the manifest's.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None, help="Default: the manifest's.")
@click.option("--lr", type=POSITIVE, default=None, help="Learning rate (> 0). Default: the manifest's.")
@click.option("--max-iters", type=click.IntRange(min=1), default=None, help="Iteration cap. Default: the manifest's.")
@click.option("--stop", type=click.Choice(STOP_MODES), default=None, help="Stopping criterion. Default: the manifest's (auto).")
@click.option("--eps", type=click.FloatRange(min=0.0), default=None, help="Slope threshold (>= 0). Default: the manifest's.")
@click.option("--slope-window", type=click.IntRange(min=1), default=None, help="Iterations in the slope's moving average.")
@click.option("--k-min", type=click.IntRange(min=0), default=None, help="Earliest Laplacian-peak stop. Default: the manifest's.")
@click.option("--slope-min-iter", type=click.IntRange(min=0), default=None, help="Earliest slope stop. Default: the manifest's.")
@click.option("--patience", type=click.IntRange(min=1), default=None,
              help="Iterations the slope must stay below --eps before stopping. Default: the manifest's.")
@click.option("--slope-fit", type=click.Choice(SLOPE_FITS), default=None,
              help="Smoothed slope: mean of raw slopes, or a regression line. Default: the manifest's.")
@click.option("--lap-window", type=click.IntRange(min=1), default=None,
              help="Trailing mean of the Laplacian variance before its peak is sought. Default: the manifest's.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Graphs to run: fp32, or the fp16 copies diip-fp16 verified (ONNX Runtime backends). Default: fp32.")
@click.option("--loop", type=click.Choice(LOOPS), default=None,
              help="Where z and Adam's moments live: device (the export's iterate graph, one call per iteration; "
                   "only losses come back), host (numpy), auto: device on ort-cuda / ort-tensorrt when the export "
                   "has the graph. Default: auto.")
@click.option("--residual-guard", type=click.FloatRange(0.0, 1.0), default=None,
              help="Return the input for a region whose residual (restored - input) has a lag-one correlation above "
                   "this: structure the prior could not fit, not noise (1: off). Default: the manifest's.")
@click.option("--restarts", type=click.IntRange(min=1), default=None,
              help="Restore K times from different seeds, batched, and average (K times the work). Default: the manifest's (1).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--tile", type=click.IntRange(min=0), default=None, help="Tile size (a multiple of the model's); 0 = the "
              "whole image, where it fits. Default: the manifest's tile size.")
@click.option("--tile-overlap", type=click.IntRange(min=0), default=None, help="Overlap between tiles. Default: a quarter of the tile.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Tiles per graph call (the output does not depend on it). Default: 8 on the CPU and TensorRT "
                   "engines, 64 tiles of 64 (512x512 pixels) a call on ort-cuda / ort-tensorrt.")
@click.option("--stop-scope", type=click.Choice(STOP_SCOPES), default="image", show_default=True,
              help="image: one stop for all tiles (summed loss, Laplacian of the blended image); tile: each tile its own.")
@click.option("--region-tiles", type=click.IntRange(min=1), default=256, show_default=True,
              help="With --stop-scope image: at most this many neighbouring tiles share one stop (bounds memory).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse larger images before any compute.")
@click.option("--skip-existing", is_flag=True, help="Skip inputs whose output JSON is complete and whose PNG matches its hash.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for ONNX Runtime.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              help="Spread the images over a Ray cluster: --ray alone starts one here, --ray auto joins the running "
                   "one, --ray ADDRESS joins that one (needs pip install '.[ray]'). A photo of several tile units "
                   "(--region-tiles) is split over the workers.")
@click.option("--ray-workers", type=click.IntRange(min=1), default=None,
              help="Actors to start (default: one per GPU on GPU backends, else CPUs / --threads).")
@click.option("--steps-per-report", type=click.IntRange(min=1), default=10, show_default=True, help="Progress refresh interval.")
@click.option("--save-plots", is_flag=True, help="Also write <stem>_curves.png and <stem>_before_after.png (needs matplotlib).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(inputs, model_dir, out_dir, backend, gradient, optimizer, lr, max_iters, stop, eps, slope_window, k_min,
         slope_min_iter, patience, slope_fit, lap_window, loop, residual_guard, precision, restarts, seed, tile, tile_overlap, batch, stop_scope, region_tiles, max_pixels, skip_existing, threads, ray_address, ray_workers, steps_per_report,
         save_plots, quiet) -> int:
    """Restore INPUT images or folders (searched recursively) blindly with the Diffusion Image Prior.

    Images are restored in overlapping tiles of the model's tile size and blended back
    smoothly.  IN.ext writes OUT/IN.png and OUT/IN.json (folders mirror their layout);
    where two inputs share a name, the later keeps its extension (a.jpg -> a.jpg.png).
    Exit codes: 0 all done, 1 some inputs failed, 2 usage or model error, 130 interrupted.
    """
    if lr is not None and not math.isfinite(lr):
        raise click.BadParameter(f"{lr} is not a finite number", param_hint="'--lr'")
    found, input_errors = expand_inputs(list(inputs))
    try:
        jobs, warnings = plan_outputs(found, out_dir)
        if save_plots:
            _require_matplotlib()
    except OutputError as e:
        _fail(str(e))
        return EXIT_USAGE
    for w in warnings:
        _warn(w)
    tiles = TileSettings(tile=tile, overlap=tile_overlap, batch=batch, max_pixels=max_pixels, stop_scope=stop_scope,
                         region_tiles=region_tiles)
    overrides = dict(lr=lr, optimizer=optimizer, gradient=gradient, max_iters=max_iters, stop=stop, eps=eps,
                     slope_window=slope_window, k_min=k_min, seed=seed, slope_min_iter=slope_min_iter, patience=patience,
                     slope_fit=slope_fit, lap_window=lap_window, restarts=restarts, residual_guard=residual_guard,
                     precision=precision, loop=loop)
    restorer: Optional[Restorer] = None
    try:
        if ray_address:  # the workers open the backend; here only the model and options are checked
            Restorer.check(model_dir, tiles, **overrides)
        else:
            restorer = Restorer(model_dir, backend, threads, tiles, **overrides)
        if jobs:
            check_writable(out_dir)
    except (ManifestError, BackendUnavailable, RunnerError, ValueError, OSError, OutputError) as e:
        if restorer is not None:
            restorer.close()
        _fail(str(e).splitlines()[0])
        return EXIT_USAGE
    if restorer is not None and not quiet:
        click.echo(f"diip-run: {restorer.selection.describe()}", err=True)

    for msg in input_errors:
        _fail(msg)
    todo = []
    for job in jobs:
        if skip_existing and is_complete(job):
            if not quiet:
                click.echo(f"{job.source}: {job.png} is complete, skipped", err=True)
        else:
            todo.append(job)
    failures, finished = len(input_errors), len(jobs) - len(todo)
    try:
        if ray_address:
            failures += _run_on_ray(todo, model_dir, backend, threads, tiles, overrides, ray_address, ray_workers,
                                    save_plots, quiet)
            return EXIT_SOME_FAILED if failures else EXIT_OK
        assert restorer is not None
        for job in todo:
            try:
                report = restore_job(restorer, job, None if quiet else steps_per_report, save_plots, _warn)
                finished += 1
                if not quiet:
                    click.echo(summary_line(job, report), err=True)
            except (ImageError, NonFiniteError, RunnerError, ValueError, RuntimeError, MemoryError, OSError) as e:
                failures += 1
                text = str(e).splitlines()[0] if str(e) else type(e).__name__
                _fail(text if text.startswith(str(job.source)) else f"{job.source}: {text}")
    except KeyboardInterrupt:
        click.echo(f"diip-run: interrupted: {finished} of {len(jobs)} images finished and kept", err=True)
        return EXIT_INTERRUPTED
    finally:
        if restorer is not None:
            restorer.close()
    return EXIT_SOME_FAILED if failures else EXIT_OK


def _run_on_ray(todo, model_dir, backend, threads, tiles, overrides, address, workers, save_plots, quiet) -> int:
    """The jobs over Ray actors; progress (images done / total, ETA) aggregated here. Returns failures."""
    from .ray_runner import RayUnavailable, run_jobs

    failures = 0

    def on_result(r, done, total, eta):
        nonlocal failures
        if not r["ok"]:
            failures += 1
            _fail(r["error"])
        elif not quiet:
            click.echo(f"diip-run: ray: {done}/{total} images, ETA {eta:.0f} s: {r['source']} -> "
                       f"{r['report']['output']}", err=True)  # the PNG's name beside its JSON

    def on_unit(source, done, total):
        if not quiet:
            click.echo(f"diip-run: ray: {source}: {done}/{total} tile units", err=True)

    if not todo:
        return 0
    try:
        run_jobs(todo, str(model_dir), backend, threads, tiles, overrides, address, workers, save_plots, on_result,
                 on_unit)
    except RayUnavailable as e:
        _fail(str(e))
        return len(todo)
    return failures


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise OutputError("--save-plots needs matplotlib: pip install matplotlib (or '.[bench]' in the checkout); "
                          "nothing was restored") from None


if __name__ == "__main__":
    main()
