"""Issue 26, tried before it is built: a learning rate that rises to its value over the
first evaluations (a warm-up), measured against the constant rate on the same crops.

At lr 0.1 the chain's output still swings over the first 10-20 evaluations (a running
average of the outputs gains 2.35 dB at 10 evaluations: bench/output_average.py), and
Adam's first steps move every element of z by about the full rate.  A warm-up tames the
first steps; unlike the falling rate that lost (``--lr-final``), it keeps the full rate
for the climb.  The rate after ``e`` evaluations is ``lr * min(1, f + (1 - f) e / W)``.
Only the host loop's rate is changed, and only in this process (``samples.scheduled_lr``
patched); nothing is built into the runtime unless it wins.  Histories are written as
``diip-tune record`` writes them, for bench/warm_start.py and bench/few_evals.py.
Quality only.

    python bench/lr_warmup.py --start 0.3 --evaluations 5 --out W.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diip_deploy.bench.tune import record
from diip_deploy.runtime.images.codec import save_json
from diip_deploy.runtime.optimise import samples


def warmed_up(lr: float, start: float, over: int, evaluations: int) -> float:
    """The rate after ``evaluations`` evaluations: from ``lr * start`` up to ``lr`` over ``over``."""
    return lr * min(1.0, start + (1.0 - start) * max(evaluations, 0) / over)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=float, required=True, help="the first evaluation's rate, as a share of lr")
    ap.add_argument("--evaluations", type=int, required=True, help="evaluations over which the rate rises")
    ap.add_argument("--lr", type=float, default=None, help="the rate reached (default: the export's)")
    ap.add_argument("--export", type=Path, default=Path("models/default-export"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=8, help="ordinary crops a task (plus as many saturated ones)")
    ap.add_argument("--task", action="append", default=None, help="diip-tune tasks (default: noise25)")
    ap.add_argument("--max-iters", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    samples.scheduled_lr = lambda lr, lr_final, evaluations, cap: warmed_up(  # type: ignore[assignment]
        lr, args.start, args.evaluations, evaluations
    )
    h = record(
        args.export,
        args.n,
        64,
        args.task or ["noise25"],
        args.lr,
        args.max_iters,
        16,
        args.threads,
        args.seed,
        saturated=args.n,
    )
    h["lr_warmup"] = {"start": args.start, "evaluations": args.evaluations}
    save_json(args.out, h)
    print(f"wrote {args.out}: {len(h['samples'])} histories in {h['seconds']} s")


if __name__ == "__main__":
    main()
