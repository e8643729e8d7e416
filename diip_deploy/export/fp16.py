"""fp16 copies of an export's ONNX graphs for ONNX Runtime (``diip-fp16 EXPORT_DIR``, or
``diip-export --precision fp16``).

Convolutions, matrix products and element-wise arithmetic go to float16; normalisation,
softmax, reductions and the transcendental ops stay in float32, and the graphs keep
float32 inputs and outputs, so the runtime feeds them exactly as the fp32 ones.  Each copy
is checked against its fp32 graph through the whole DDIM chain, on the runtime's own
numpy chain with ORT's CPU provider, against the tolerances the TensorRT fp16 tests name
(2e-2 relative L2 on x0, 5e-2 on the latent gradient); the errors are written into the
manifest beside the graphs, and a copy that misses them is not listed at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import click
import numpy as np

from ..cli_common import CommandError, OneLineErrors
from ..manifest import (
    FP16_SUFFIX,
    ManifestError,
    add_graphs,
    fp16_name,
    graph_entry,
    load_manifest,
    read_data,
    remove_graphs,
    set_fp16,
    write_manifest,
)

# ops kept in float32: normalisation and its statistics, softmax, reductions, and the
# ops whose range or accuracy fp16 cannot hold (exp, sqrt, division, the timestep embedding)
FP32_OPS = [
    "InstanceNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "BatchNormalization",
    "Softmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceL2",
    "Sqrt",
    "Div",
    "Pow",
    "Exp",
    "Log",
    "Sin",
    "Cos",
    "Range",
    "Erf",
]
TOLERANCE = {"x0": 2e-2, "grad": 5e-2}


class Fp16Error(Exception):
    """An fp16 copy could not be made or missed its tolerance; one line says which."""


def convert_graph(src: Path, dst: Path) -> None:
    """Write an fp16 copy of one ONNX graph, float32 at its inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, op_block_list=FP32_OPS)
    onnx.save(model, str(dst))


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / max(float(np.linalg.norm(b.astype(np.float64))), 1e-12))


def chain_errors(
    manifest: Any, gradient: str, size: int, batch: int = 2, seed: int = 0, threads: Optional[int] = None
) -> Dict[str, float]:
    """Relative L2 of x0 and of the latent gradient, fp16 chain against fp32, on one
    random batch of ``size`` x ``size`` latents and targets."""
    from ..runtime.backends.select import open_chain

    rng = np.random.default_rng(seed)
    shape = (batch, manifest.channels, size, size)
    z = rng.standard_normal(shape).astype(np.float32)
    y = np.clip(rng.standard_normal(shape) * 0.5, -1, 1).astype(np.float32)
    out = {}
    for precision in ("fp32", "fp16"):
        chain = open_chain(manifest, "ort-cpu", gradient, threads, precision=precision)
        try:
            out[precision] = chain.loss_and_grad(z, y)
        finally:
            chain.close()
    (x32, _, g32), (x16, _, g16) = out["fp32"], out["fp16"]
    return {"x0": round(_rel(x16, x32), 6), "grad": round(_rel(g16, g32), 6)}


def _serves(manifest: Any, gradient: str, sources: List[str]) -> bool:
    """Whether the export's graphs run this gradient mode (a surrogate-only export has no
    unet_vjp for the exact one)."""
    from ..runtime.backends.select import graphs_for

    try:
        return all(n in sources for n in graphs_for(manifest, gradient))
    except ManifestError:
        return False


def add_fp16_graphs(
    export_dir: Path,
    size: Optional[int] = None,
    threads: Optional[int] = None,
    log: Callable[[str], None] = lambda m: None,
    enforce: bool = True,
) -> Dict[str, Any]:
    """Convert every fp32 graph of an export, verify each gradient mode it serves, and list
    the copies in the manifest with the errors; returns the manifest's ``fp16`` section.
    ``enforce=False`` lists copies that miss the tolerances too, marked so (a random-weight
    model for timing, bench/celeba.py; no command offers it)."""
    export_dir = Path(export_dir)
    manifest = load_manifest(export_dir)
    data = read_data(export_dir)
    # the iteration graphs carry Adam's second moment, whose squares fp16 flushes to zero:
    # their fp16 twins are traced with the UNet alone in fp16 (diip-export --iterate --precision fp16)
    sources = [n for n in data["graphs"] if not n.endswith(FP16_SUFFIX) and not n.startswith("iterate_")]
    written: List[Path] = []
    size = size or int(data.get("tiling", {}).get("tile_size") or data["model"].get("native_size") or 32)
    modes = [g for g in ("surrogate", "exact") if _serves(manifest, g, sources)]
    section: Dict[str, Any] = {"fp32_ops": FP32_OPS, "tolerance": TOLERANCE, "verified_at": [size, size], "errors": {}}
    try:
        for name in sources:
            entry = data["graphs"][name]
            dst = export_dir / (Path(entry["file"]).stem + FP16_SUFFIX + ".onnx")
            log(f"fp16: converting {entry['file']}")
            written.append(dst)
            convert_graph(manifest.graph_path(name), dst)
            fields = {k: v for k, v in entry.items() if k not in ("sha256", "chain")}
            add_graphs(
                data,
                {
                    fp16_name(name): graph_entry(
                        export_dir, fp16_name(name), manifest.chain_spec, **{**fields, "file": dst.name}
                    )
                },
            )
        write_manifest(export_dir, data)  # listed, so the check below opens them as the runtime does
        listed = load_manifest(export_dir)
        for gradient in modes:
            errors = chain_errors(listed, gradient, size, threads=threads)
            log(f"fp16: {gradient} chain against fp32: x0 {errors['x0']:.2e}, gradient {errors['grad']:.2e}")
            section["errors"][gradient] = errors
            bad = [k for k, tol in TOLERANCE.items() if not errors[k] <= tol]
            section["within_tolerance"] = section.get("within_tolerance", True) and not bad
            if bad and enforce:
                raise Fp16Error(
                    f"{export_dir}: fp16 {gradient} chain misses its tolerance on "
                    + ", ".join(f"{k} ({errors[k]:.2e} > {TOLERANCE[k]:.0e})" for k in bad)
                    + "; the fp16 graphs are not listed"
                )
    except Exception:
        remove_graphs(data, [fp16_name(n) for n in sources])
        write_manifest(export_dir, data)
        for path in written:
            path.unlink(missing_ok=True)
        raise
    set_fp16(data, section)
    write_manifest(export_dir, data)
    return section


@click.command(cls=OneLineErrors, name="diip-fp16")
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.option("--size", type=click.IntRange(min=1), default=None, help="Verification size (default: the tile size).")
@click.option("--threads", type=click.IntRange(min=1), default=None)
def main(export_dir: Path, size: Optional[int], threads: Optional[int]) -> None:
    """Add fp16 copies of EXPORT_DIR's graphs, verified against fp32 (diip-run --precision fp16)."""
    try:
        section = add_fp16_graphs(export_dir, size, threads, log=lambda m: click.echo(m, err=True))
    except (Fp16Error, ManifestError, OSError, ValueError) as e:
        raise CommandError(str(e)) from None
    click.echo(
        f"wrote fp16 graphs into {export_dir}/manifest.json: "
        + "; ".join(f"{g}: x0 {e['x0']:.1e}, gradient {e['grad']:.1e}" for g, e in section["errors"].items())
    )
