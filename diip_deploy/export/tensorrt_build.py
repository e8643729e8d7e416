"""Build TensorRT engines from the exported ONNX graphs (``diip-export --engine tensorrt``).

One engine per graph, preferring the fused chain graphs (one call per iteration) and
keeping per-step engines for memory-bound devices.  Each graph first passes the static
operator check, so unsupported operators are reported before a long build.  Engines are
recorded in the manifest with the TensorRT version, the GPU, the precision, the
optimisation profile and the sha256 of the ONNX they came from.

fp16: convolutions and matrix products run in fp16; normalisation, softmax, reductions
and unary math (sqrt, exp) stay fp32 (OBEY_PRECISION_CONSTRAINTS), which keeps GroupNorm
statistics and the DDIM arithmetic out of fp16's range limits.  The runtime scales each
VJP cotangent by a power of two (exact in fp32) so gradients do not under/overflow.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

import click

from ..cli_common import CommandError, OneLineErrors
from ..manifest import ManifestError, load_manifest, set_engines, sha256_file, write_manifest
from ..runtime.backends.base import BackendUnavailable
from ..runtime.backends.tensorrt import current_gpu, import_tensorrt
from .tensorrt_support import check_onnx

if TYPE_CHECKING:
    import tensorrt as trt

Shape3 = Tuple[int, int, int]


def check_can_build() -> None:
    """Fail before exporting if this machine cannot build engines."""
    try:
        import_tensorrt()
        current_gpu()
    except BackendUnavailable as e:
        raise CommandError(f"cannot build TensorRT engines here: {e}") from None
    except Exception as e:
        raise CommandError(f"cannot build TensorRT engines here: no CUDA device via cuda-python ({e})") from None


DEFAULT_BATCH, MAX_BATCH = 8, 16


def parse_bhw(text: Optional[str], default: Shape3) -> Shape3:
    if not text:
        return default
    try:
        b, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"shape {text!r} must be BxHxW, e.g. 1x256x256") from None
    return b, h, w


def parse_profile(
    min_shape: Optional[str], opt_shape: Optional[str], max_shape: Optional[str], manifest: Dict[str, Any]
) -> Dict[str, Shape3]:
    """Profile over batch, height and width; defaults centre on batches of the runtime's
    tiles (diip-run --batch 8 at the manifest's tile size), up to 16 tiles."""
    m = manifest["model"]
    n, k = int(m["native_size"]), int(m["size_multiple"])
    t = int(manifest.get("tiling", {}).get("tile_size", n))
    prof = {
        "min": parse_bhw(min_shape, (1, k * 2, k * 2)),
        "opt": parse_bhw(opt_shape, (DEFAULT_BATCH, t, t)),
        "max": parse_bhw(max_shape, (MAX_BATCH, max(t, 2 * n), max(t, 2 * n))),
    }
    for i in range(3):
        if not prof["min"][i] <= prof["opt"][i] <= prof["max"][i]:
            raise click.BadParameter(f"profile must satisfy min <= opt <= max in every dimension: {prof}")
    for name, (_, h, w) in prof.items():
        if h % k or w % k:
            raise click.BadParameter(f"{name} shape {h}x{w} is not a multiple of the UNet's {k}")
    return prof


def _input_shape(name: str, bhw: Shape3, channels: int) -> Tuple[int, ...]:
    b, h, w = bhw
    return (b,) if name == "timestep" else (b, channels, h, w)


def _keep_fp32(network: trt.INetworkDefinition) -> None:
    import tensorrt as trt

    keep = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE, trt.LayerType.UNARY}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in keep:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    channels: int,
    precision: str,
    profile: Dict[str, Shape3],
    workspace_mb: Optional[int],
    timing_cache: Optional[Path],
    log: Callable[[str], None],
) -> None:
    import_tensorrt()  # a clear error if only the stubs are installed
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            errors.append(f"  node {e.node()} ({e.node_name()}, {e.node_operator()}): {e.desc()}")
        raise CommandError(f"TensorRT's ONNX parser rejected {onnx_path.name}:\n" + "\n".join(errors))
    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        _keep_fp32(network)
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        lo, mid, hi = (trt.Dims(list(_input_shape(name, profile[k], channels))) for k in ("min", "opt", "max"))
        opt_profile.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(opt_profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.time()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:  # type: ignore[comparison-overlap]
        raise CommandError(f"TensorRT failed to build an engine for {onnx_path.name} (see the log above)")
    tmp = engine_path.with_suffix(".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(engine_path)
    if timing_cache:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    log(f"  {engine_path.name}: built in {time.time() - t0:.0f} s ({precision})")


def build_engines(
    out_dir: Path,
    manifest: Dict[str, Any],
    precision: str,
    profile: Dict[str, Shape3],
    workspace_mb: Optional[int],
    timing_cache: Optional[Path],
    log: Callable[[str], None] = print,
) -> Dict:
    """Static check, then an engine per graph; updates and rewrites the manifest."""
    trt = import_tensorrt()
    gpu = current_gpu()
    channels = int(manifest["model"]["channels"])
    reports = {name: check_onnx(out_dir / g["file"]) for name, g in manifest["graphs"].items()}
    for r in reports.values():
        log(r.summary())
    bad = [n for n, r in reports.items() if not r.ok]
    if bad:
        raise CommandError(f"graphs with operators TensorRT cannot parse: {', '.join(bad)}")
    engines = {}
    for name, g in manifest["graphs"].items():
        engine_file = f"{name}.{precision}.engine"
        build_engine(
            out_dir / g["file"], out_dir / engine_file, channels, precision, profile, workspace_mb, timing_cache, log
        )
        engines[name] = {
            "file": engine_file,
            "sha256": sha256_file(out_dir / engine_file),
            "onnx_sha256": g["sha256"],
            "tensorrt_version": trt.__version__,
            "gpu": gpu,
            "precision": precision,
            "profile": {k: list(v) for k, v in profile.items()},
            "workspace_mb": workspace_mb,
        }
    set_engines(manifest, engines, {n: {"ok": r.ok, "warnings": r.warnings} for n, r in reports.items()})
    write_manifest(out_dir, manifest)
    log(json.dumps({n: e["file"] for n, e in engines.items()}))
    return manifest


def build_for_command(
    out_dir: Path,
    manifest: Dict[str, Any],
    precision: str,
    min_shape: Optional[str],
    max_shape: Optional[str],
    opt_shape: Optional[str],
    workspace: Optional[int],
    timing_cache: Optional[Path],
) -> Dict:
    """``build_engines`` from the options ``engine_options`` adds, logging to stderr."""
    profile = parse_profile(min_shape, opt_shape, max_shape, manifest)
    return build_engines(
        out_dir, manifest, precision, profile, workspace, timing_cache, log=lambda m: click.echo(m, err=True)
    )


def engine_options(fn: Callable) -> Callable:
    """The engine-building options, shared by diip-export and diip-build-engines."""
    options = [
        click.option(
            "--precision",
            type=click.Choice(("fp32", "fp16")),
            default="fp32",
            show_default=True,
            help="fp16: TensorRT engines in fp16 (with --engine); diip-export also writes verified fp16 "
            "ONNX copies for ONNX Runtime (diip-run --precision fp16).",
        ),
        click.option("--min-shape", default=None, help="TensorRT profile minimum, BxHxW."),
        click.option("--opt-shape", default=None, help="TensorRT profile optimum, BxHxW."),
        click.option("--max-shape", default=None, help="TensorRT profile maximum, BxHxW."),
        click.option("--workspace", type=int, default=None, help="TensorRT workspace limit in MB."),
        click.option(
            "--timing-cache", type=click.Path(path_type=Path), default=None, help="Timing cache file (reused)."
        ),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


@click.command(cls=OneLineErrors, name="diip-build-engines")
@click.argument("export_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@engine_options
def build_main(export_dir, precision, min_shape, opt_shape, max_shape, workspace, timing_cache):
    """Build TensorRT engines for an existing export (on the device that will run them; no torch)."""
    check_can_build()
    try:
        manifest = load_manifest(export_dir).data
    except ManifestError as e:
        raise CommandError(str(e)) from None
    build_for_command(export_dir, manifest, precision, min_shape, max_shape, opt_shape, workspace, timing_cache)
