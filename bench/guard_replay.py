"""The residual guard's threshold and evaluation, replayed on recorded histories: what
diip-run would return under each (residual_guard, guard_at), the rest of the export's
defaults unchanged.

``guard.py`` restores crops once and judges the final output; this one replays the
runtime's own order from ``diip-tune record`` histories (each holds the residual
correlation of every evaluation): the early guard at ``guard_at``, then the stop rule and
the guard on the stop's result (``tune_scoring.per_crop``).  So it scores the early guard
too, and costs nothing beyond the recording.  Choose on training-photo histories; report
on held-out ones.

    python bench/guard_replay.py --histories H_train.json H_val.json --held-out H_held.json \\
        --export models/default-export --json bench/results/guard_replay.json

``--write`` records, in the export's manifest (``validation.residual_guard_replay``), what
its own guard settings give on these histories beside the guard off, marked with the
weights and chain they were recorded on: the guard's record for the weights that ship.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from diip_deploy.bench.tune_cli import manifest_settings
from diip_deploy.bench.tune_scoring import per_crop
from diip_deploy.manifest import load_manifest

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
GUARD_AT = (10, 14, 20)


def load(files: Sequence[Path]) -> List[Dict[str, Any]]:
    """The histories files, each read once: every row below replays the same recordings."""
    return [json.loads(Path(f).read_text()) for f in files]


def replay(histories: Sequence[Dict[str, Any]], settings: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """Per task over every recording's crops: input, returned, margin, the worst crop's
    margin, crops handed back and the mean evaluations run."""
    per: Dict[str, List[Dict[str, Any]]] = {}
    for h in histories:
        for c in per_crop(h, settings):
            per.setdefault(c["task"], []).append(c)
    out = {}
    for task, crops in sorted(per.items()):
        inp, ret = np.mean([c["input"] for c in crops]), np.mean([c["returned"] for c in crops])
        out[task] = {
            "crops": len(crops),
            "input": round(float(inp), 3),
            "returned": round(float(ret), 3),
            "margin_db": round(float(ret - inp), 3),
            "worst_db": round(float(min(c["returned"] - c["input"] for c in crops)), 3),
            "handed_back": int(sum(not c["kept"] for c in crops)),
            "mean_cost": round(float(np.mean([c["cost"] for c in crops])), 1),
        }
    return out


def correlations_at(histories: Sequence[Dict[str, Any]], guard_at: int) -> Dict[str, float]:
    """Per task, the highest residual correlation at evaluation ``guard_at``: how close the
    threshold may come to a task the guard should keep."""
    top: Dict[str, float] = {}
    for h in histories:
        for s in h["samples"]:
            corr = s.get("correlation") or []
            if len(corr) >= guard_at:
                top[s["task"]] = max(top.get(s["task"], -1.0), float(corr[guard_at - 1]))
    return {k: round(v, 3) for k, v in sorted(top.items())}


def write_record(
    export: Path,
    names: Sequence[Path],
    histories: Sequence[Dict[str, Any]],
    held_out: Sequence[Dict[str, Any]],
    shipped: Dict[str, Any],
) -> None:
    """The export's own (residual_guard, guard_at) against the guard off, per task, into its
    manifest; refused where a recording names another chain than the export's (recordings
    do not name their weights: the record takes the export's)."""
    from diip_deploy.manifest import read_data, write_manifest

    data = read_data(export)
    chain = list(data["chain"]["timesteps"])
    for h in list(histories) + list(held_out):
        if h.get("settings", {}).get("timesteps") not in (None, chain):
            raise SystemExit(f"{h.get('export', 'a recording')} was recorded on another chain than {export}'s")
    off = {**shipped, "residual_guard": 1.0}
    record: Dict[str, Any] = {
        "tool": "bench/guard_replay.py",
        "residual_guard": shipped["residual_guard"],
        "guard_at": shipped["guard_at"],
        "training": replay(histories, shipped),
        "training_without": replay(histories, off),
        "histories": [Path(p).name for p in names],
        "weights_sha256": data["model"]["weights_sha256"],
        "chain_timesteps": chain,
    }
    if held_out:
        record.update(held_out=replay(held_out, shipped), held_out_without=replay(held_out, off))
    data.setdefault("validation", {})["residual_guard_replay"] = record
    write_manifest(export, data)
    print(f"wrote validation.residual_guard_replay into {export / 'manifest.json'}", file=sys.stderr)


def main() -> None:
    from diip_deploy.bench.report import emit

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--histories", type=Path, nargs="+", required=True, help="training-photo histories: choose here")
    ap.add_argument("--held-out", type=Path, nargs="*", default=[], help="held-out histories: report only")
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--write", action="store_true", help="record the export's own guard row in its manifest")
    a = ap.parse_args()
    shipped = manifest_settings(load_manifest(a.export).data["defaults"])
    histories, held_out = load(a.histories), load(a.held_out)
    rows = []
    for guard_at in GUARD_AT:
        for th in THRESHOLDS:
            rule = {**shipped, "residual_guard": th, "guard_at": guard_at}
            row: Dict[str, Any] = {"residual_guard": th, "guard_at": guard_at, "training": replay(histories, rule)}
            if held_out:
                row["held_out"] = replay(held_out, rule)
            rows.append(row)
    if a.write:
        write_record(a.export, a.histories, histories, held_out, shipped)
    emit(
        {
            "benchmark": "residual guard replayed on recorded histories",
            "export": str(a.export),
            "shipped": {"residual_guard": shipped["residual_guard"], "guard_at": shipped["guard_at"]},
            "histories": [str(p) for p in a.histories],
            "held_out_histories": [str(p) for p in a.held_out],
            "top_correlation_at": {
                str(g): {"training": correlations_at(histories, g), "held_out": correlations_at(held_out, g)}
                for g in GUARD_AT
            },
            "rows": rows,
        },
        a.json,
    )


if __name__ == "__main__":
    main()
