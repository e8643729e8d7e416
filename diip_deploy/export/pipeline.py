"""Export one model: load it, trace and export its graphs, verify each against torch
autograd, and write the manifest (``diip-export`` is the command around it)."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .. import __version__
from ..cli_common import CommandError
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
from ..settings import SettingsError, choices, manifest_defaults

GRADIENTS = choices("gradient")


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
    timesteps: Optional[Sequence[int]] = None,
    rechain: bool = False,
    carry_from: Optional[Path] = None,
    log=print,
) -> dict:
    """Export ``model`` into ``out``; returns the manifest written.  Raises on failure.
    ``add``: export only the fused and iteration graphs asked for and list them in the
    export already in ``out`` (same weights and chain), leaving its other graphs, tuned
    defaults and records as they are.  ``iterate_fp16``: each iteration graph also in fp16
    (its UNet calls; verified against fp32 autograd with fp16's tolerances).  The fused and
    iteration graphs bake in the export's default ``clamp_gradient`` (an ``add`` export's:
    the manifest's), and their manifest entries say which.  ``timesteps``: the chain's
    own timesteps, falling (``steps`` is then their number), where DDIM's leading spacing
    of ``steps`` is not wanted.  ``rechain`` (with ``add``): the export moves to this chain
    (``rechain_export``).  ``carry_from``: a fresh export of new weights that takes its
    tuned defaults and records from the export of other weights in that folder, each record
    marked with the weights (and chain) it was measured on (``carried_records``)."""
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
    try:
        spec = ChainSpec.from_table(loaded.alphas_cumprod, steps, clamp, timesteps)
    except ValueError as e:
        raise CommandError(f"--timesteps: {e}") from None
    steps = len(spec.timesteps)
    eps_model = EpsModel(prepare_unet(loaded.unet), loaded.alphas_cumprod, loaded.prediction_type).eval()
    gradients = list(GRADIENTS) if gradient == "both" else [gradient]
    fused_modes = [g for g in gradients if fused in (g, "both")]
    iterate_modes = [g for g in gradients if iterate in (g, "both")]
    existing, dropped = existing_export(out, loaded.weights_sha256, spec, rechain) if add else (None, [])
    carried = carried_records(carry_from, spec) if carry_from is not None else None
    if carried is not None:
        defaults = {**carried["defaults"], **(defaults or {})}
    chosen = runtime_defaults(gradients, defaults) if existing is None else existing.get("defaults", {})
    baked_clamp = chosen.get("clamp_gradient", "mask")
    out.mkdir(parents=True, exist_ok=True)
    tsize = trace_size or max(2 * multiple, 16)
    vsize = verify_size or min(max(native, 2 * multiple), 64)
    if vsize == tsize:
        vsize += multiple  # verify at a size the tracer never saw
    graphs, verification = {}, {}
    straight = baked_clamp == "straight"
    for gd in graph_defs(eps_model, spec, gradients, fused_modes, iterate_modes, iterate_fp16, straight):
        baked = gd.name.startswith(BAKED_PREFIXES)
        if existing is not None and not baked:
            continue
        log(f"exporting {gd.name} ...")
        fields = export_graph(gd, out, channels, tsize, log=log)
        if baked:
            fields["clamp_gradient"] = baked_clamp  # what the runtime opens the graph for
        graphs[gd.name] = graph_entry(out, gd.name, spec, **fields)
        if verify:
            v = verify_graph(gd.name, out / gd.file, gd.inputs, eps_model, spec, channels, vsize, straight=straight)
            verification[gd.name] = {**v, "clamp_gradient": baked_clamp} if baked else v
            errs = ", ".join(f"{k} {e:.2e}" for k, e in v["rel_l2"].items()) or v["error"]
            log(
                f"  verify {gd.name} vs torch autograd at {vsize}x{vsize}: rel L2 {errs} "
                f"-> {'ok' if v['passed'] else 'FAIL'}"
            )
    if existing is not None:
        add_graphs(existing, graphs, verification if verify else None)
        write_manifest(out, existing)
        for file in set(dropped) - {g["file"] for g in existing["graphs"].values()}:
            (out / file).unlink(missing_ok=True)  # a graph of the old chain, unlisted now
        return _check_verified(existing, verification, out)
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
        carried_tiling(carried, multiple)
        if carried is not None and tile_size is None
        else tiling_entry(tile_size or native, multiple),
        chosen,
        tool_versions(),
        verification if verify else None,
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    if carried is not None and carried["validation"]:
        manifest["validation"] = carried["validation"]
    write_manifest(out, manifest)
    return _check_verified(manifest, verification, out)


def runtime_defaults(gradients: List[str], given: Optional[dict]) -> dict:
    """The manifest's defaults: the settings' own, the export's gradient, then ``given``."""
    default_gradient = "surrogate" if "surrogate" in gradients else "exact"
    try:
        return manifest_defaults(**{"gradient": default_gradient, **(given or {})})
    except SettingsError as e:
        raise CommandError(f"runtime defaults: {e}") from None


def _check_verified(manifest: dict, verification: dict, out: Path) -> dict:
    failed = [k for k, v in verification.items() if not v["passed"]]
    if failed:
        raise CommandError(
            f"verification failed for {', '.join(failed)}: relative L2 error above its tolerance "
            f"(1e-4; fp16 graphs: verify.FP16_TOLERANCE; graphs kept in {out} for inspection)"
        )
    return manifest


def existing_export(out: Path, weights_sha256: str, spec: ChainSpec, rechain: bool = False) -> Tuple[dict, List[str]]:
    """The manifest that ``--add`` extends, if it is of these weights and this chain (of
    any chain with ``rechain``, which moves it to this one), and the files of the graphs
    that the move unlisted."""
    try:
        data = read_data(out)
    except (OSError, ManifestError) as e:
        raise CommandError(f"--add: no readable export in {out} ({str(e).splitlines()[0]})") from None
    if data.get("model", {}).get("weights_sha256") != weights_sha256:
        raise CommandError(f"--add: {out} was exported from other weights than this model's")
    chain = data.get("chain", {})
    if not same_chain(chain, chain_record(spec)):
        if rechain:
            return data, rechain_export(data, spec)
        raise CommandError(
            f"--add: {out} has another chain (steps {chain.get('steps')}, clamp {chain.get('clamp')}); "
            "pass the --steps (or --timesteps) and --clamp it was exported with, or --rechain to move it"
        )
    return data, []


def rechain_export(data: dict, spec: ChainSpec) -> List[str]:
    """Move an export being edited to the chain ``spec``: the per-step graphs stay (they
    take the timestep), the graphs that bake the old chain in leave (``--add`` re-traces
    those asked for), and every record the old chain was measured under keeps that chain's
    timesteps as ``chain_timesteps``, so that nothing reads as measured on the new one.
    Returns the files of the graphs it unlisted."""
    old = list(data["chain"]["timesteps"])
    baked = [name for name in data.get("graphs", {}) if name.startswith(BAKED_PREFIXES)]
    files = [data["graphs"][name]["file"] for name in baked] + [
        e["file"] for name, e in data.get("engines", {}).items() if name in baked
    ]
    for section in ("graphs", "verification", "engines"):
        for name in baked:
            data.get(section, {}).pop(name, None)
    mark_measured(data.get("validation", {}), {"chain_timesteps": old})
    for record in data.get("variants", {}).values():
        record.setdefault("chain_timesteps", old)
    data["chain"] = {**data["chain"], "steps": len(spec.timesteps), **chain_record(spec)}
    return files


def mark_measured(validation: dict, mark: dict) -> None:
    """Mark the manifest's validation records with what they were measured on (a record
    already marked keeps its mark): the diip-tune record that ``validation`` itself is, and
    each record kept inside it (one with a ``tool``), never a per-task table of scores."""
    if not validation:
        return
    for record in [validation, *(r for r in validation.values() if isinstance(r, dict) and "tool" in r)]:
        for key, value in mark.items():
            record.setdefault(key, value)


def carried_records(source: Path, spec: ChainSpec) -> dict:
    """What ``--carry-from`` takes from another export: its defaults, and its records, each
    marked ``weights_sha256`` (and ``chain_timesteps``, where the chain differs) with what it
    was measured on, so that none reads as measured on the new weights; a record already
    marked keeps its mark.  Its tiling comes too (``carried_tiling``).  Variant checks are
    not carried: they judge one export's graphs."""
    try:
        data = read_data(source)
    except (OSError, ManifestError) as e:
        raise CommandError(f"--carry-from: no readable export in {source} ({str(e).splitlines()[0]})") from None
    validation = copy.deepcopy(data.get("validation", {}))
    mark = {"weights_sha256": data["model"]["weights_sha256"]}
    if not same_chain(data.get("chain", {}), chain_record(spec)):
        mark["chain_timesteps"] = list(data["chain"]["timesteps"])
    mark_measured(validation, mark)
    return {"defaults": dict(data.get("defaults", {})), "validation": validation, "tiling": data.get("tiling")}


def carried_tiling(carried: dict, multiple: int) -> dict:
    """The carried export's tile and largest whole image (its runtime's, tuned with the
    defaults), checked against this UNet's size multiple."""
    tiling = carried.get("tiling") or {}
    if "tile_size" not in tiling:
        raise CommandError("--carry-from: that export names no tile size; give --tile-size")
    return {**tiling_entry(int(tiling["tile_size"]), multiple), **tiling}


def tiling_entry(tile_size: int, multiple: int) -> dict:
    """The runtime's tile (where the model's criteria hold) and the largest whole image it
    may try at once (the UNet's attention grows with the square of the pixel count)."""
    if tile_size < multiple or tile_size % multiple:
        raise CommandError(f"--tile-size {tile_size} must be a positive multiple of the UNet's {multiple}")
    return {"tile_size": int(tile_size), "max_tile_pixels": int(max(4 * tile_size**2, 256 * 256))}
