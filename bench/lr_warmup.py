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

from diip_deploy.bench import loop_study
from diip_deploy.runtime.optimise import samples


def warmed_up(lr: float, start: float, over: int, evaluations: int) -> float:
    """The rate after ``evaluations`` evaluations: from ``lr * start`` up to ``lr`` over ``over``."""
    return lr * min(1.0, start + (1.0 - start) * max(evaluations, 0) / over)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", type=float, required=True, help="the first evaluation's rate, as a share of lr")
    ap.add_argument("--evaluations", type=int, required=True, help="evaluations over which the rate rises")
    loop_study.add_arguments(ap)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    samples.scheduled_lr = lambda lr, lr_final, evaluations, cap: warmed_up(  # type: ignore[assignment]
        lr, args.start, args.evaluations, evaluations
    )
    loop_study.record_crops(args, args.out, "lr_warmup", {"start": args.start, "evaluations": args.evaluations})


if __name__ == "__main__":
    main()
