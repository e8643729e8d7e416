"""Issue 26, tried before it is built: the same number of UNet calls at other timesteps.

The shipped chain calls the UNet at DDIM's leading spacing, t = 800, 600, 400, 200, 0.
The last two calls are the denoisers that set the output's fine texture (the t=0 call
alone is worth 0.4 dB, bench/final_step.py), yet the spacing gives them a fifth of the
chain each, as it does the t=800 call that only sets the layout.  Here the host loop is
handed a chain at the timesteps ``--timesteps`` names, alphas_cumprod read off the
model's own scheduler, in this process only; the UNet graph takes the timestep, so a
spacing that wins is a manifest edit (and a re-trace of the graphs that bake the chain
in).  Histories are written as ``diip-tune record`` writes them, for bench/warm_start.py
and bench/few_evals.py.  Quality only.

    python bench/chain_timesteps.py --timesteps 700,450,250,100,20 \
        --out bench/results/chain_timesteps/t700-450-250-100-20_seed0.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from diip_deploy.bench import loop_study
from diip_deploy.schedule import ChainSpec


def respaced(spec: ChainSpec, timesteps: Sequence[int], alphas_cumprod: Sequence[float]) -> ChainSpec:
    """``spec`` at other timesteps, its clamp kept."""
    try:
        return ChainSpec.from_table(alphas_cumprod, len(timesteps), spec.clamp, timesteps)
    except ValueError as e:
        raise SystemExit(f"--timesteps: {e}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    loop_study.add_arguments(ap)
    ap.add_argument("--timesteps", required=True, help="comma-separated, falling, e.g. 800,500,250,100,0")
    ap.add_argument("--model", type=Path, default=None, help="the export's model folder (default: its manifest's)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    timesteps = [int(t) for t in args.timesteps.split(",")]
    table = loop_study.alphas_cumprod(args.export, args.model)
    loop_study.record_with_chain(
        args, args.out, "chain_timesteps", {"timesteps": timesteps}, lambda spec: respaced(spec, timesteps, table)
    )


if __name__ == "__main__":
    main()
