"""What the host-loop studies of issue 26 share: each changes the host loop in its own
process only (a patched step, rate or listener), then records the few_evals crops, noisy
validation crops of the training photos with as many saturated ones, as ``diip-tune
record`` does, so that bench/warm_start.py and bench/few_evals.py compare the result with
the shipped loop's records crop for crop.  Nothing is built into the runtime unless it
wins."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict

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
        saturated=args.n,
    )
    histories[study] = params
    save_json(out, histories)
    print(f"wrote {out}: {len(histories['samples'])} histories in {histories['seconds']} s")
    return histories
