"""Issue 26, tried before it is built: the chain without its t=0 UNet call.

The shipped 5-step chain calls the UNet at t = 800, 600, 400, 200 and 0.  At t = 0,
a_0 = 0.9999, so the last step returns x0_hat = (x_0 - 0.01 eps) / 0.99995: the fifth
call moves the output by 1% of its eps, about what the step before added back
(sqrt(1 - a_0) eps), yet costs a fifth of every evaluation.  Dropped, the chain ends at
t = 200 and returns that step's clamped x0_hat (a_prev = 1 after the last step, as for
any chain).  Only the chain the host loop is handed changes, in this process only;
histories are written as ``diip-tune record`` writes them, for bench/warm_start.py and
bench/few_evals.py.  Quality only.

    python bench/final_step.py --max-iters 40 --out bench/results/final_step/skip_seed0.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diip_deploy.bench import loop_study
from diip_deploy.schedule import ChainSpec


def without_t0(spec: ChainSpec) -> ChainSpec:
    """The chain less its last step, when that step is the t=0 one."""
    if spec.timesteps[-1] != 0 or len(spec.timesteps) < 2:
        raise SystemExit(f"the chain's last timestep is {spec.timesteps[-1]}, not 0")
    return ChainSpec(timesteps=tuple(spec.timesteps[:-1]), alphas=tuple(spec.alphas[:-1]), clamp=spec.clamp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    loop_study.add_arguments(ap)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    loop_study.record_with_chain(args, args.out, "final_step", {"t0_call": False}, without_t0)


if __name__ == "__main__":
    main()
