"""``diip-export``: a diffusers UNet -> ONNX graphs (+ TensorRT engines) + manifest."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import click

from .. import __version__
from ..cli_common import CommandError, OneLineErrors
from ..manifest import (
    BAKED_PREFIXES,
    ManifestError,
    add_graphs,
    chain_record,
    graph_entry,
    new_manifest,
    read_data,
    same_chain,
    write_manifest,
)
from ..schedule import ChainSpec
from ..settings import RestoreSettings, SettingsError, manifest_defaults, specs
from .tensorrt_build import engine_options

GRADIENTS = specs(RestoreSettings)["gradient"].choices or ()


def tool_versions() -> dict:
    import importlib.metadata as md

    out = {"diip-deploy": __version__}
    for pkg in ("torch", "diffusers", "onnx", "onnxscript", "onnxruntime"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def export_model(
    model: str,
    out: Path,
    steps: int = 10,
    gradient: str = "both",
    fused: str = "none",
    clamp: bool = True,
    verify: bool = True,
    prediction_type: Optional[str] = None,
    trace_size: Optional[int] = None,
    verify_size: Optional[int] = None,
    defaults: Optional[dict] = None,
    tile_size: Optional[int] = None,
    iterate: str = "none",
    add: bool = False,
    iterate_fp16: bool = False,
    log=print,
) -> dict:
    """Export ``model`` into ``out``; returns the manifest written.  Raises on failure.
    ``add``: export only the fused and iteration graphs asked for and list them in the
    export already in ``out`` (same weights and chain), leaving its other graphs, tuned
    defaults and records as they are.  ``iterate_fp16``: each iteration graph also in fp16
    (its UNet calls; verified against fp32 autograd with fp16's tolerances)."""
    from .loading import load_model, size_multiple
    from .onnx_export import export_graph, graph_defs
    from .reference import EpsModel
    from .trace import prepare_unet
    from .verify import verify_graph

    loaded = load_model(model, prediction_type)
    cfg = loaded.unet_config
    channels = int(cfg["in_channels"])
    if int(cfg["out_channels"]) != channels:
        raise CommandError(
            f"UNet has {cfg['in_channels']} input but {cfg['out_channels']} output channels; DIIP needs them equal"
        )
    multiple = size_multiple(cfg)
    native = cfg.get("sample_size") or 64
    native = int(native[0] if isinstance(native, (list, tuple)) else native)
    spec = ChainSpec.from_table(loaded.alphas_cumprod, steps, clamp)
    eps_model = EpsModel(prepare_unet(loaded.unet), loaded.alphas_cumprod, loaded.prediction_type).eval()
    gradients = list(GRADIENTS) if gradient == "both" else [gradient]
    fused_modes = [g for g in gradients if fused in (g, "both")]
    iterate_modes = [g for g in gradients if iterate in (g, "both")]
    existing = existing_export(out, loaded.weights_sha256, spec) if add else None
    out.mkdir(parents=True, exist_ok=True)
    tsize = trace_size or max(2 * multiple, 16)
    vsize = verify_size or min(max(native, 2 * multiple), 64)
    if vsize == tsize:
        vsize += multiple  # verify at a size the tracer never saw
    graphs, verification = {}, {}
    for gd in graph_defs(eps_model, spec, gradients, fused_modes, iterate_modes, iterate_fp16):
        if existing is not None and not gd.name.startswith(BAKED_PREFIXES):
            continue
        log(f"exporting {gd.name} ...")
        graphs[gd.name] = graph_entry(out, gd.name, spec, **export_graph(gd, out, channels, tsize, log=log))
        if verify:
            v = verify_graph(gd.name, out / gd.file, gd.inputs, eps_model, spec, channels, vsize)
            verification[gd.name] = v
            errs = ", ".join(f"{k} {e:.2e}" for k, e in v["rel_l2"].items()) or v["error"]
            log(
                f"  verify {gd.name} vs torch autograd at {vsize}x{vsize}: rel L2 {errs} -> {'ok' if v['passed'] else 'FAIL'}"
            )
    if existing is not None:
        add_graphs(existing, graphs, verification if verify else None)
        write_manifest(out, existing)
        return _check_verified(existing, verification, out)
    default_gradient = "surrogate" if "surrogate" in gradients else "exact"
    try:
        chosen = manifest_defaults(**{"gradient": default_gradient, **(defaults or {})})
    except SettingsError as e:
        raise CommandError(f"runtime defaults: {e}") from None
    model_entry = {
        "source": model,
        "weights_sha256": loaded.weights_sha256,
        "class": "UNet2DModel",
        "channels": channels,
        "native_size": native,
        "size_multiple": multiple,
        "prediction_type": loaded.prediction_type,
        "parameters": int(sum(p.numel() for p in loaded.unet.parameters())),
    }
    chain = {
        "steps": steps,
        **chain_record(spec),
        "eta": 0.0,
        "x0": "last step's clamped x0_hat" if clamp else "last step's x0_hat",
        "loss": "per-image mean squared error",
    }
    manifest = new_manifest(
        model_entry,
        chain,
        graphs,
        tiling_entry(tile_size or native, multiple),
        chosen,
        tool_versions(),
        verification if verify else None,
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    write_manifest(out, manifest)
    return _check_verified(manifest, verification, out)


def _check_verified(manifest: dict, verification: dict, out: Path) -> dict:
    failed = [k for k, v in verification.items() if not v["passed"]]
    if failed:
        raise CommandError(
            f"verification failed for {', '.join(failed)}: relative L2 error above its tolerance "
            f"(1e-4; fp16 graphs: verify.FP16_TOLERANCE; graphs kept in {out} for inspection)"
        )
    return manifest


def existing_export(out: Path, weights_sha256: str, spec: ChainSpec) -> dict:
    """The manifest that ``--add`` extends, if it is of these weights and this chain."""
    try:
        data = read_data(out)
    except (OSError, ManifestError) as e:
        raise CommandError(f"--add: no readable export in {out} ({str(e).splitlines()[0]})") from None
    if data.get("model", {}).get("weights_sha256") != weights_sha256:
        raise CommandError(f"--add: {out} was exported from other weights than this model's")
    chain = data.get("chain", {})
    if not same_chain(chain, chain_record(spec)):
        raise CommandError(
            f"--add: {out} has another chain (steps {chain.get('steps')}, clamp {chain.get('clamp')}); "
            "pass the --steps and --clamp it was exported with"
        )
    return data


def tiling_entry(tile_size: int, multiple: int) -> dict:
    """The runtime's tile (where the model's criteria hold) and the largest whole image it
    may try at once (the UNet's attention grows with the square of the pixel count)."""
    if tile_size < multiple or tile_size % multiple:
        raise CommandError(f"--tile-size {tile_size} must be a positive multiple of the UNet's {multiple}")
    return {"tile_size": int(tile_size), "max_tile_pixels": int(max(4 * tile_size**2, 256 * 256))}


@click.command(cls=OneLineErrors, name="diip-export")
@click.argument("model")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--steps", type=int, default=10, show_default=True, help="DDIM steps S of the chain.")
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
    gradient,
    fused,
    iterate,
    add,
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
        from .tensorrt_build import build_engines, parse_profile

        build_engines(
            out_dir,
            manifest,
            precision,
            parse_profile(min_shape, opt_shape, max_shape, manifest),
            workspace,
            timing_cache,
            log=lambda m: click.echo(m, err=True),
        )
    click.echo(f"wrote {out_dir}/manifest.json ({', '.join(manifest['graphs'])})")
