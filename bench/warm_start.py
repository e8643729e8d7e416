"""Issue 26's warm start, measured against the paper's noise start on the same crops.

Each start is recorded with ``diip-tune record`` (16 noisy validation crops, 8 of them
saturated, to 40 evaluations, no stop) at several seeds; a seed picks other crops, other
noise and another starting noise, so seeds add crops.  Per evaluation count, crop for crop
against the noise start of the same seed: the mean PSNR of each, the mean difference with
its standard error, how many crops the candidate wins, and the worst per-channel mean
error.  Quality only.  Any two sets of histories of the same crops compare the same way
(``--evals``, and the best evaluation of each crop): two priors' exports, for one.

    python bench/warm_start.py --noise N0.json N1.json --candidate "noised 10" W0.json W1.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from diip_deploy.bench.metrics import gain_summary

EVALS = (10, 15, 20, 25, 30, 40)


def paired(noise_files: List[Path], candidate_files: List[Path]) -> Dict[str, np.ndarray]:
    """[crops, evaluations] arrays of PSNR and channel-mean error, each candidate crop
    beside the noise start's same crop (same seed: files in the same order)."""
    rows: Dict[str, List[Any]] = {"psnr": [], "psnr_noise": [], "channel": [], "channel_noise": []}
    for nf, cf in zip(noise_files, candidate_files, strict=True):
        base = {(s["task"], s["crop"]): s for s in json.loads(nf.read_text())["samples"]}
        for s in json.loads(cf.read_text())["samples"]:
            b = base[(s["task"], s["crop"])]
            rows["psnr"].append(s["psnr"])
            rows["psnr_noise"].append(b["psnr"])
            rows["channel"].append(s["channel_mean_error"])
            rows["channel_noise"].append(b["channel_mean_error"])
    n = min(len(r) for r in rows["psnr"] + rows["psnr_noise"])
    return {k: np.array([r[:n] for r in v]) for k, v in rows.items()}


def compare(p: Dict[str, np.ndarray], evals: Sequence[int] = EVALS) -> List[Dict[str, Any]]:
    out = []
    for k in evals:
        if k > p["psnr"].shape[1]:
            break
        counted = gain_summary(p["psnr"][:, k - 1], p["psnr_noise"][:, k - 1], digits=2)
        out.append(
            {
                "evaluations": k,
                "psnr": round(float(p["psnr"][:, k - 1].mean()), 2),
                "psnr_noise_start": round(float(p["psnr_noise"][:, k - 1].mean()), 2),
                "gain_db": counted["gain_db"],
                "gain_stderr": counted["stderr_db"],
                "crops_won": counted["won"],
                "crops": counted["of"],
                "channel_max": round(float(p["channel"][:, k - 1].max()), 1),
                "channel_max_noise_start": round(float(p["channel_noise"][:, k - 1].max()), 1),
            }
        )
    return out


def best(p: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """Each crop at its own best evaluation (the oracle stop) within what was recorded."""
    counted = gain_summary(p["psnr"].max(axis=1), p["psnr_noise"].max(axis=1), digits=2)
    return {
        "psnr": round(float(p["psnr"].max(axis=1).mean()), 2),
        "psnr_noise_start": round(float(p["psnr_noise"].max(axis=1).mean()), 2),
        "gain_db": counted["gain_db"],
        "gain_stderr": counted["stderr_db"],
        "evaluations": p["psnr"].shape[1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", type=Path, nargs="+", required=True, help="the noise start's histories, one per seed")
    ap.add_argument(
        "--candidate", nargs="+", action="append", required=True, help="a label, then its histories in --noise's order"
    )
    ap.add_argument("--evals", type=int, nargs="+", default=list(EVALS), help="evaluation counts to compare at")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    result: Dict[str, Any] = {"noise": [str(f) for f in args.noise], "candidates": {}}
    for label, *files in args.candidate:
        p = paired(args.noise, [Path(f) for f in files])
        rows, oracle = compare(p, args.evals), best(p)
        result["candidates"][label] = {"histories": files, "by_evaluations": rows, "oracle": oracle}
        print(label)
        for r in rows:
            print(
                f"  {r['evaluations']:>3} evaluations: {r['psnr']:.2f} against {r['psnr_noise_start']:.2f} dB, "
                f"{r['gain_db']:+.2f} +- {r['gain_stderr']:.2f}, won {r['crops_won']}/{r['crops']}, "
                f"worst channel {r['channel_max']:.1f} against {r['channel_max_noise_start']:.1f} of 255"
            )
        print(
            f"  oracle within {oracle['evaluations']}: {oracle['psnr']:.2f} against "
            f"{oracle['psnr_noise_start']:.2f} dB, {oracle['gain_db']:+.2f} +- {oracle['gain_stderr']:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
