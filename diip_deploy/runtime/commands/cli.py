"""``diip-run``: restore images with an exported model, torch-free.

Exit codes: 0 all done, 1 some inputs failed, 2 usage or model error, 130 interrupted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import click

from ...cli_common import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE
from ...manifest import ManifestError, load_manifest
from ...settings import RestoreSettings
from ..backends.base import BackendUnavailable, RunnerError
from ..backends.select import BACKENDS
from ..images.codec import ImageError
from ..images.outputs import OutputError, check_writable, expand_inputs, is_complete, plan_outputs
from ..optimise.samples import NonFiniteError
from ..restorer import Restorer
from .jobs import restore_job, summary_line
from .options import GroupedCommand, option, pop_settings, settings_options

NAME = "diip-run"


def _fail(msg: str) -> None:
    click.echo(f"{NAME}: error: {msg}", err=True)


def _warn(msg: str) -> None:
    click.echo(f"{NAME}: warning: {msg}", err=True)


@dataclass
class RunRequest:
    """One ``diip-run`` invocation: what to restore, where, on what, and how."""

    inputs: List[Path]
    model_dir: Path
    out_dir: Path
    backend: str
    threads: Optional[int]
    options: Dict[str, Any]  # RestoreSettings names; None: not given
    settings_class: type
    ray: Optional[str]  # None: no Ray; "": a local cluster (or RAY_ADDRESS); else the cluster's address
    ray_workers: Optional[int]
    skip_existing: bool
    steps_per_report: int
    save_plots: bool
    quiet: bool


def run(req: RunRequest) -> int:
    """Plan the outputs, open the model, restore each input; returns the exit code."""
    found, input_errors = expand_inputs(req.inputs)
    try:
        jobs, warnings = plan_outputs(found, req.out_dir)
        if req.save_plots:
            _require_matplotlib()
    except OutputError as e:
        _fail(str(e))
        return EXIT_USAGE
    for w in warnings:
        _warn(w)
    restorer: Optional[Restorer] = None
    try:
        manifest = load_manifest(req.model_dir, settings_class=req.settings_class)
        if req.ray is not None:  # the workers open the backend; here only the model and options are checked
            Restorer.check(req.model_dir, manifest, **req.options)
        else:
            restorer = Restorer(req.model_dir, req.backend, req.threads, manifest, **req.options)
        if jobs:
            check_writable(req.out_dir)
    except (ManifestError, BackendUnavailable, RunnerError, ValueError, OSError, OutputError) as e:
        if restorer is not None:
            restorer.close()
        _fail(str(e).splitlines()[0])
        return EXIT_USAGE
    if restorer is not None and not req.quiet:
        click.echo(f"{NAME}: {restorer.selection.describe()}", err=True)
        for note in restorer.notes:
            click.echo(f"{NAME}: note: {note}", err=True)
    for msg in input_errors:
        _fail(msg)
    todo = []
    for job in jobs:
        if req.skip_existing and is_complete(job):
            if not req.quiet:
                click.echo(f"{job.source}: {job.png} is complete, skipped", err=True)
        else:
            todo.append(job)
    failures, finished = len(input_errors), len(jobs) - len(todo)
    try:
        if req.ray is not None:
            failures += _run_on_ray(todo, req)
            return EXIT_SOME_FAILED if failures else EXIT_OK
        assert restorer is not None
        for job in todo:
            try:
                report = restore_job(restorer, job, None if req.quiet else req.steps_per_report, req.save_plots, _warn)
                finished += 1
                if not req.quiet:
                    click.echo(summary_line(job, report), err=True)
            except (ImageError, NonFiniteError, RunnerError, ValueError, RuntimeError, MemoryError, OSError) as e:
                failures += 1
                text = str(e).splitlines()[0] if str(e) else type(e).__name__
                _fail(text if text.startswith(str(job.source)) else f"{job.source}: {text}")
    except KeyboardInterrupt:
        click.echo(f"{NAME}: interrupted: {finished} of {len(jobs)} images finished and kept", err=True)
        return EXIT_INTERRUPTED
    finally:
        if restorer is not None:
            restorer.close()
    return EXIT_SOME_FAILED if failures else EXIT_OK


def _run_on_ray(todo: list, req: RunRequest) -> int:
    """The jobs over Ray actors; progress (images done / total, ETA) aggregated here. Returns failures."""
    from .ray_runner import RayUnavailable, RunOn, run_jobs

    failures = 0

    def on_result(r: Dict[str, Any], done: int, total: int, eta: float) -> None:
        nonlocal failures
        if not r["ok"]:
            failures += 1
            _fail(r["error"])
        elif not req.quiet:
            click.echo(
                f"{NAME}: ray: {done}/{total} images, ETA {eta:.0f} s: {r['source']} -> {r['report']['output']}",
                err=True,
            )  # the PNG's name beside its JSON

    def on_unit(source: str, done: int, total: int) -> None:
        if not req.quiet:
            click.echo(f"{NAME}: ray: {source}: {done}/{total} tile units", err=True)

    if not todo:
        return 0
    on = RunOn(str(req.model_dir), req.backend, req.threads, req.options)
    try:
        run_jobs(todo, on, req.ray or None, req.ray_workers, req.save_plots, on_result, on_unit)
    except RayUnavailable as e:
        _fail(str(e))
        return len(todo)
    return failures


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise OutputError(
            "--save-plots needs matplotlib: pip install matplotlib (or '.[bench]' in the checkout); "
            "nothing was restored"
        ) from None


def build_command(settings_class: type = RestoreSettings) -> click.Command:
    """The ``diip-run`` command over ``settings_class``'s options (tests extend it)."""

    @click.command(cls=GroupedCommand, name=NAME)
    @click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
    @option(
        "--model",
        "model_dir",
        group="model",
        required=True,
        type=click.Path(path_type=Path),
        help="Export folder (its manifest.json).",
    )
    @option(
        "--backend",
        group="model",
        type=click.Choice(("auto",) + BACKENDS),
        default="auto",
        show_default=True,
        help="auto: TensorRT engines, else ONNX Runtime with CUDA, else the CPU.",
    )
    @option("--threads", group="model", type=click.IntRange(min=1), default=None, help="CPU threads for ONNX Runtime.")
    @settings_options(settings_class)
    @option("--out", "out_dir", group="io", required=True, type=click.Path(path_type=Path), help="Output folder.")
    @option(
        "--skip-existing",
        group="io",
        is_flag=True,
        help="Skip inputs whose output JSON is complete and whose PNG matches its hash.",
    )
    @option(
        "--save-plots",
        group="io",
        is_flag=True,
        help="Also write <stem>_curves.png and <stem>_before_after.png (needs matplotlib).",
    )
    @option(
        "--steps-per-report",
        group="io",
        type=click.IntRange(min=1),
        default=10,
        show_default=True,
        help="Progress refresh interval.",
    )
    @option("--quiet", group="io", is_flag=True, help="No progress bar.")
    @option(
        "--ray",
        group="io",
        is_flag=True,
        help="Spread the images over a Ray cluster (pip install '.[ray]'): the one --ray-address or RAY_ADDRESS "
        "names, else a local one started here. A photo of several tile units is split over the workers.",
    )
    @option(
        "--ray-address",
        group="io",
        default=None,
        help="The Ray cluster to join (implies --ray): an address, or auto for the running one.",
    )
    @option(
        "--ray-workers",
        group="io",
        type=click.IntRange(min=1),
        default=None,
        help="Actors to start (default: one per GPU on GPU backends, else CPUs / --threads).",
    )
    def main(
        inputs,
        model_dir,
        out_dir,
        backend,
        threads,
        ray,
        ray_address,
        ray_workers,
        skip_existing,
        steps_per_report,
        save_plots,
        quiet,
        **kwargs,
    ) -> int:
        """Restore INPUT images or folders (searched recursively) blindly with the Diffusion Image Prior.

        Images are restored in overlapping tiles of the model's tile size and blended back
        smoothly.  IN.ext writes OUT/IN.png and OUT/IN.json (folders mirror their layout);
        where two inputs share a name, the later keeps its extension (a.jpg -> a.jpg.png).
        Exit codes: 0 all done, 1 some inputs failed, 2 usage or model error, 130 interrupted.
        """
        address = ray_address or (os.environ.get("RAY_ADDRESS", "") if ray else None)
        req = RunRequest(
            list(inputs),
            model_dir,
            out_dir,
            backend,
            threads,
            pop_settings(kwargs, settings_class),
            settings_class,
            address if (ray or ray_address) else None,
            ray_workers,
            skip_existing,
            steps_per_report,
            save_plots,
            quiet,
        )
        return run(req)

    return main


main: Callable[..., Any] = build_command()

if __name__ == "__main__":
    main()
