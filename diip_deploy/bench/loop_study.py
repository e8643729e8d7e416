"""What the host-loop studies of issue 26 share: each changes the host loop in its own
process only (a patched step, rate or listener), then records the few_evals crops, noisy
validation crops of the training photos with as many saturated ones, as ``diip-tune
record`` does, so that bench/warm_start.py and bench/few_evals.py compare the result with
the shipped loop's records crop for crop.  Nothing is built into the runtime unless it
wins."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .tune import record


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The crops, the export and the run length every study takes."""
    ap.add_argument("--export", type=Path, default=Path("models/default-export"))
    ap.add_argument("--seed", type=int, default=0, help="picks the crops, their damage and the starting noises")
    ap.add_argument("--n", type=int, default=8, help="ordinary crops a task (plus as many saturated ones)")
    ap.add_argument("--task", action="append", default=None, help="diip-tune tasks (default: noise25)")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: the export's)")
    ap.add_argument("--max-iters", type=int, default=40)
    ap.add_argument("--size", type=int, default=64, help="crop size (the shipped model's tile)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--held-out",
        action="store_true",
        help="--n crops of the held-out photos (no saturated ones: those come from the training photos)",
    )


def record_crops(args: argparse.Namespace, out: Path, study: str, params: Dict[str, Any]) -> Dict[str, Any]:
    """The study's histories, recorded to ``--max-iters`` with no stop, its ``params``
    under ``study``, written to ``out``."""
    from ..runtime.images.codec import save_json

    histories = record(
        args.export,
        args.n,
        args.size,
        args.task or ["noise25"],
        args.lr,
        args.max_iters,
        16,
        args.threads,
        args.seed,
        held_out=args.held_out,
        saturated=0 if args.held_out else args.n,
    )
    histories[study] = params
    save_json(out, histories)
    print(f"wrote {out}: {len(histories['samples'])} histories in {histories['seconds']} s")
    return histories


def record_outputs(
    args: argparse.Namespace, out: Path, study: str, params: Dict[str, Any]
) -> Tuple[Dict[str, Any], Dict[int, List[np.ndarray]]]:
    """``record_crops``, and each sample's x0 at every evaluation (model range, as the
    loop's callback hands it), by sample index: for studies that change only the image
    judged, not the trajectory.  The host loop is patched in this process only, for the
    recording's length."""
    from ..runtime.optimise import loop

    outputs: Dict[int, List[np.ndarray]] = {}
    restore_iter = loop.restore_iter

    def keeping(chain, ys, settings, seeds=None, batch=None, callback=None):  # type: ignore[no-untyped-def]
        def listen(info: Dict[str, Any]) -> None:
            for j, i in enumerate(info["index"]):
                outputs.setdefault(int(i), []).append(np.asarray(info["x0"][j], dtype=np.float32))
            if callback is not None:
                callback(info)

        return restore_iter(chain, ys, settings, seeds, batch, listen)

    loop.restore_iter = keeping  # type: ignore[assignment]
    try:
        return record_crops(args, out, study, params), outputs
    finally:
        loop.restore_iter = restore_iter


def alphas_cumprod(export: Path, model: Optional[Path] = None) -> np.ndarray:
    """The whole alphas_cumprod table of the export's model (``model``, by default the
    folder the export was made from), from its scheduler config, checked against the
    alphas the export's manifest holds at its chain's timesteps."""
    from ..export.loading import ModelLoadError, folder_alphas_cumprod
    from ..manifest import load_manifest

    manifest = load_manifest(export)
    source = model or Path(manifest.data["model"]["source"])
    try:
        table = folder_alphas_cumprod(source)
    except (OSError, ModelLoadError) as e:
        raise SystemExit(f"{e}; name the export's model folder with --model") from None
    spec = manifest.chain_spec
    if not np.allclose([table[t] for t in spec.timesteps], spec.alphas, rtol=1e-9, atol=0):
        raise SystemExit(f"{source}'s schedule does not give the alphas of {export}'s chain")
    return table


def record_with_chain(
    args: argparse.Namespace, out: Path, study: str, params: Dict[str, Any], change: Callable[[Any], Any]
) -> Dict[str, Any]:
    """``record_crops`` with the host loop handed ``change(spec)`` for the export's chain
    spec, in this process only.  The chain is opened on the per-step UNet graph alone, so
    that no graph that bakes the export's own chain in runs an evaluation."""
    from ..runtime.backends import select

    opened = select.open_chain

    def per_step(manifest, backend, gradient, threads=None, prefer_fused=True, **kw):  # type: ignore[no-untyped-def]
        chain = opened(manifest, backend, gradient, threads, False, **kw)
        chain.spec = change(chain.spec)
        return chain

    select.open_chain = per_step  # type: ignore[assignment]
    try:
        return record_crops(args, out, study, params)
    finally:
        select.open_chain = opened


def rescored_histories(
    histories: Dict[str, Any], inputs: Sequence[Tuple[np.ndarray, np.ndarray]], images: Dict[int, List[np.ndarray]]
) -> Dict[str, Any]:
    """``histories`` with each sample's image metrics (PSNR, per-channel mean error, the
    guard's residual correlation) recomputed on ``images[i]``, the image a changed run
    would judge at each evaluation (model range); ``inputs[i]`` is sample i's (clean
    crop, damaged input in the model's range).  The losses, and so every stop decision,
    stay the recorded run's."""
    from ..runtime.images.codec import from_model_range
    from ..runtime.optimise.guard import residual_correlation
    from .metrics import psnr
    from .saturated import channel_mean_error

    out = copy.deepcopy(histories)
    for i, (s, (clean, y)) in enumerate(zip(out["samples"], inputs, strict=True)):
        xs = [from_model_range(a[None]) for a in images[i]]
        s["psnr"] = [round(psnr(clean, x), 4) for x in xs]
        s["channel_mean_error"] = [round(channel_mean_error(x, clean), 2) for x in xs]
        s["correlation"] = [round(residual_correlation(a, y), 4) for a in images[i]]
    return out
