"""``diip-export``: a diffusers UNet -> ONNX graphs (+ TensorRT engines) + manifest."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli_common import CommandError, OneLineErrors, parse_timesteps
from ..manifest import read_data
from .pipeline import GRADIENTS, export_model
from .tensorrt_build import engine_options


@click.command(cls=OneLineErrors, name="diip-export")
@click.argument("model")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--steps", type=int, default=10, show_default=True, help="DDIM steps S of the chain.")
@click.option(
    "--timesteps",
    default=None,
    help="The chain's own timesteps, comma-separated and falling (e.g. 700,400,200,80,20), instead of "
    "--steps' leading spacing (800,600,400,200,0 for 5).",
)
@click.option("--gradient", type=click.Choice((*GRADIENTS, "both")), default="both", show_default=True)
@click.option(
    "--fused",
    type=click.Choice(("none", *GRADIENTS, "both")),
    default="none",
    show_default=True,
    help="Also export the whole chain as one graph for these gradient modes: one call per iteration, no "
    "recomputed forward (exact runs faster on CPU; surrogate gains little). Slow to export.",
)
@click.option(
    "--iterate",
    type=click.Choice(("none", *GRADIENTS, "both")),
    default="none",
    show_default=True,
    help="Also export a whole iteration (chain, Adam, projection) as one graph for these gradient modes, so "
    "that diip-run's state stays on the device (the GPU path); with --precision fp16 also its fp16 "
    "twin (UNet calls in fp16). Slow to export.",
)
@click.option(
    "--add",
    is_flag=True,
    help="Export only the --fused / --iterate graphs and add them to the export "
    "already in --out (same model and chain); its other graphs, defaults and records stay.",
)
@click.option(
    "--rechain",
    is_flag=True,
    help="With --add: move the export in --out to this chain (--steps or --timesteps). Its per-step graphs, "
    "defaults and records stay, each record marked with the chain it was measured on; its fused and "
    "iteration graphs leave, and those asked for are re-traced at the new chain.",
)
@click.option(
    "--carry-from",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="An export of other weights (e.g. the prior this one replaces) whose tuned defaults and records this "
    "export takes, each record marked with the weights (and chain) it was measured on. Not with --add.",
)
@click.option("--clamp/--no-clamp", default=True, show_default=True, help="Clamp x0_hat to [-1, 1] at each step.")
@click.option("--verify/--no-verify", default=True, show_default=True)
@click.option(
    "--prediction-type",
    type=click.Choice(("epsilon", "v_prediction")),
    default=None,
    help="Override the scheduler config.",
)
@click.option("--lr", type=float, default=None, help="Runtime default learning rate for this model.")
@click.option("--max-iters", type=int, default=None, help="Runtime default iteration cap.")
@click.option("--k-min", type=int, default=None, help="Runtime default Laplacian k_min.")
@click.option("--eps", "slope_eps", type=float, default=None, help="Runtime default slope threshold.")
@click.option("--default-gradient", type=click.Choice(GRADIENTS), default=None)
@click.option("--trace-size", type=int, default=None, help="Spatial size used for tracing (default small).")
@click.option(
    "--tile-size", type=int, default=None, help="Runtime tile size for this model (default: its sample size)."
)
@click.option("--engine", type=click.Choice(("none", "tensorrt")), default="none", show_default=True)
@engine_options
def main(
    model,
    out_dir,
    steps,
    timesteps,
    gradient,
    fused,
    iterate,
    add,
    rechain,
    carry_from,
    clamp,
    verify,
    prediction_type,
    lr,
    max_iters,
    k_min,
    slope_eps,
    default_gradient,
    trace_size,
    tile_size,
    engine,
    precision,
    min_shape,
    opt_shape,
    max_shape,
    workspace,
    timing_cache,
):
    """Export MODEL (a diffusers pipeline or UNet folder, or a hub id) for diip-run."""
    from .loading import ModelLoadError

    defaults = {
        k: v
        for k, v in {
            "lr": lr,
            "max_iters": max_iters,
            "k_min": k_min,
            "eps": slope_eps,
            "gradient": default_gradient,
        }.items()
        if v is not None
    }
    if carry_from is not None and add:
        raise CommandError("--carry-from starts a fresh export: not with --add")
    if rechain and not add:
        raise CommandError("--rechain moves an existing export: give it with --add")
    if engine == "tensorrt":  # learn about unsupported ops before a long export, not after
        from .tensorrt_build import check_can_build

        check_can_build()
    try:
        manifest = export_model(
            model,
            out_dir,
            steps,
            gradient,
            fused,
            clamp,
            verify,
            prediction_type,
            trace_size,
            defaults=defaults,
            tile_size=tile_size,
            iterate=iterate,
            add=add,
            iterate_fp16=precision == "fp16",
            timesteps=parse_timesteps(timesteps),
            rechain=rechain,
            carry_from=carry_from,
            log=lambda m: click.echo(m, err=True),
        )
    except ModelLoadError as e:
        raise CommandError(str(e)) from None
    if precision == "fp16":  # ONNX Runtime's fp16 copies; the engines below get fp16 from the builder
        from .fp16 import Fp16Error, add_fp16_graphs

        try:
            add_fp16_graphs(out_dir, log=lambda m: click.echo(m, err=True))
        except Fp16Error as e:
            raise CommandError(str(e)) from None
        manifest = read_data(out_dir)
    if engine == "tensorrt":
        from .tensorrt_build import build_for_command

        build_for_command(out_dir, manifest, precision, min_shape, max_shape, opt_shape, workspace, timing_cache)
    click.echo(f"wrote {out_dir}/manifest.json ({', '.join(manifest['graphs'])})")
