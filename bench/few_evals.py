"""Issue 26's acceptance, replayed on recorded histories: which (learning rate, cap, stop
rule) reaches, on every validation crop, saturated ones included, what a 150-evaluation
run with the slope stop reaches, with the colours right, in few evaluations.

Each ``--histories`` file is one ``diip-tune record`` run to 150 evaluations (one per
learning rate or clamp gradient).  The reference, per crop, is the stop rule's result
with the shipped stop settings and a cap of 150 on the ``--reference`` file.  A
candidate's result per crop is what diip-run returns (the stop rule, then the residual
guard: ``tune_scoring.per_crop``), compared with the reference crop by crop.  Three
targets, each printed per candidate:

- ``worst_db``: the worst crop's shortfall against its reference (target >= -0.3);
- ``channel_max``: the worst crop's per-channel mean error, 0..255 (target <= 2), and
  beside it ``channel_over_input_max``, by how much it exceeds the damaged input's own
  (noise clipped to [0, 1] shifts a saturated channel's mean before DIIP sees it);
- ``median_cost``: the median evaluations run, early guard included (target <= 25).

    python bench/few_evals.py --reference H03.json --histories H03.json H06.json --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import numpy as np

from diip_deploy.bench.tune_cli import manifest_settings
from diip_deploy.bench.tune_scoring import per_crop, recorded_inputs
from diip_deploy.manifest import load_manifest
from diip_deploy.runtime.optimise.optim import ADAM_BETAS

REPO = Path(__file__).resolve().parents[1]
CAPS = (20, 25, 30, 40, 60)
STOPS: Dict[str, Iterable[Any]] = {
    "eps": (1e-3, 3e-4, 1e-4),
    "slope_window": (5, 10, 20),
    "patience": (1, 3),
    "slope_fit": ("mean", "regression"),
}
TARGETS = {"worst_db": -0.3, "channel_max": 2.0, "median_cost": 25}


def reference_results(histories: Dict[str, Any], shipped: Dict[str, Any]) -> Dict[tuple, float]:
    """Per (task, crop): the slope stop's result with a cap of 150."""
    rule = {**shipped, "max_iters": 150, "stop": "slope"}
    return {(c["task"], c["crop"]): c["auto"] for c in per_crop(histories, rule)}


def input_channel_errors(histories: Dict[str, Any]) -> Dict[tuple, float]:
    """Per (task, crop): the damaged input's own worst per-channel mean error (0..255).
    Noise clipped to [0, 1] shifts the means of dark or saturated channels, and a blind
    fit of the input cannot know by how much."""
    from diip_deploy.bench.saturated import channel_mean_error

    return {(s["task"], s["crop"]): channel_mean_error(y, clean) for s, clean, y in recorded_inputs(histories)}


def judge(
    histories: Dict[str, Any],
    settings: Dict[str, Any],
    reference: Dict[tuple, float],
    input_errors: Dict[tuple, float],
) -> Dict[str, Any]:
    crops = per_crop(histories, settings)
    short = [c["returned"] - reference[(c["task"], c["crop"])] for c in crops]
    worst = int(np.argmin(short))
    by_task: Dict[str, List[float]] = {}
    for c in crops:
        by_task.setdefault(c["task"], []).append(c["returned"])
    return {
        "worst_db": round(float(short[worst]), 3),
        "worst_crop": f"{crops[worst]['task']} {crops[worst]['crop']}",
        "channel_max": round(float(max(c.get("channel_mean_error", 0.0) for c in crops)), 2),
        "median_cost": float(np.median([c["cost"] for c in crops])),
        "returned": {t: round(float(np.mean(v)), 3) for t, v in by_task.items()},
        "mean_vs_reference_db": round(float(np.mean(short)), 3),
        "channel_over_input_max": round(
            max(c.get("channel_mean_error", 0.0) - input_errors[(c["task"], c["crop"])] for c in crops), 2
        ),
    }


def meets(j: Dict[str, Any]) -> bool:
    return (
        j["worst_db"] >= TARGETS["worst_db"]
        and j["channel_max"] <= TARGETS["channel_max"]
        and j["median_cost"] <= TARGETS["median_cost"]
    )


def chain_of(histories: Dict[str, Any], unrecorded: List[int]) -> List[int]:
    """The chain's timesteps a record ran (``unrecorded`` for records from before they were kept)."""
    study = histories.get("chain_timesteps", {}).get("timesteps")
    return list(histories["settings"].get("timesteps") or study or unrecorded)


def adopt(
    export: Path,
    chosen: Dict[str, Any],
    previous: Dict[str, Any],
    reference: Dict[tuple, float],
    input_errors: Dict[tuple, float],
    cap: Optional[int] = None,
) -> Dict[str, Any]:
    """The record that goes into the manifest when ``chosen``'s lr, rate schedule, Adam betas
    and clamp gradient become the defaults, with ``cap`` (the stop rule stays): both sides scored on
    the same crops, each under its own defaults, as diip-run returns them."""
    from diip_deploy.bench.tune_scoring import score

    data = load_manifest(export).data
    chain = list(data["chain"]["timesteps"])
    ran = chain_of(chosen, chain)
    if ran != chain:
        raise SystemExit(f"the adopted histories ran the chain {ran}, {export} holds {chain}")
    earlier = data.get("validation", {}).get("few_evals", {}).get("chain_timesteps", chain)  # rechain's mark
    before = manifest_settings(data["defaults"])
    before["clamp_gradient"] = previous["settings"]["clamp_gradient"]
    if [s["crop"] for s in chosen["samples"]] != [s["crop"] for s in previous["samples"]]:
        raise SystemExit("the adopted and previous histories hold different crops")
    adopted = {k: chosen["settings"].get(k, 1.0) for k in ("lr", "lr_final", "clamp_gradient")}
    # records from before the betas were kept ran torch's
    adopted["adam_beta1"], adopted["adam_beta2"] = chosen["settings"].get("adam_betas", ADAM_BETAS)
    adopted["max_iters"] = cap or before["max_iters"]
    after = {**before, **adopted}
    return {
        "tool": "bench/few_evals.py",
        "split": chosen["split"],
        "crops_per_task": chosen["n_per_task"],
        "saturated_per_task": chosen.get("saturated", 0),
        "adopted": adopted,
        "chain_timesteps": chain,
        "scores": score(chosen, after),
        "previous_defaults": {k: before[k] for k in adopted},
        "previous_defaults_scores": score(previous, before),
        "previous_chain_timesteps": chain_of(previous, earlier),
        "targets": TARGETS,
        "against_reference": judge(chosen, after, reference, input_errors),
    }


def accepted_losses(record: Dict[str, Any], given: List[str]) -> Dict[str, Any]:
    """``--accept-loss TASK=WHY`` as the record keeps it: each task's loss against the
    previous defaults, in dB as diip-run returns it, beside the reason it was accepted."""
    out = {}
    for item in given:
        task, _, why = item.partition("=")
        if task not in record["scores"] or not why.strip():
            raise SystemExit(f"--accept-loss wants TASK=WHY with a task of the record, got {item!r}")
        loss = record["previous_defaults_scores"][task]["returned"] - record["scores"][task]["returned"]
        out[task] = {"loss_db": round(loss, 3), "why": why.strip()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", type=Path, required=True, help="Histories recorded to 150 (the reference run).")
    ap.add_argument("--histories", type=Path, nargs="+", required=True)
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--adopt", type=Path, help="Histories whose lr and clamp gradient become --export's defaults.")
    ap.add_argument("--previous", type=Path, help="Histories of the defaults being replaced, on the same crops.")
    ap.add_argument("--cap", type=int, help="The cap adopted with them (default: the export's).")
    ap.add_argument("--write", action="store_true", help="Write the adopted defaults into --export's manifest.")
    ap.add_argument(
        "--accept-loss",
        action="append",
        default=[],
        metavar="TASK=WHY",
        help="With --adopt: a task the adopted side may score lower on than the previous one, and why "
        "(recorded with the loss, e.g. a new prior that trades a little JPEG for noise)",
    )
    a = ap.parse_args()
    shipped = manifest_settings(load_manifest(a.export).data["defaults"])
    reference_histories = json.loads(a.reference.read_text())
    reference = reference_results(reference_histories, shipped)
    input_errors = input_channel_errors(reference_histories)
    rows = []
    for path in a.histories:
        h = json.loads(path.read_text())
        recorded, lr_final = h["settings"]["max_iters"], h["settings"].get("lr_final", 1.0)
        made = {"lr_final": lr_final, **{k: h["settings"][k] for k in ("lr", "steps_per_eval", "clamp_gradient")}}
        # a falling rate spans the recorded cap, so such a run scores at that cap alone
        caps = [c for c in CAPS if c <= recorded] if lr_final == 1.0 else [recorded]
        for cap, values in itertools.product(caps, itertools.product(*STOPS.values())):
            stop = {"stop": "slope", "slope_min_iter": 0, **dict(zip(STOPS, values))}
            settings = {**shipped, **stop, "max_iters": cap}
            verdict = judge(h, settings, reference, input_errors)
            rows.append({"histories": path.name, **made, "max_iters": cap, **stop, **verdict})
        as_shipped = {**shipped, "max_iters": shipped["max_iters"] if lr_final == 1.0 else recorded}
        verdict = judge(h, as_shipped, reference, input_errors)
        rows.append({"histories": path.name, **made, "shipped_stop": True, **as_shipped, **verdict})
    best: Dict[tuple, Dict[str, Any]] = {}
    for r in rows:  # per (file, cap): the stop rule with the best worst crop
        key = (r["histories"], r["max_iters"], bool(r.get("shipped_stop")))
        if key not in best or (r["worst_db"], -r["median_cost"]) > (best[key]["worst_db"], -best[key]["median_cost"]):
            best[key] = r
    head = ("histories", "cap", "worst dB", "chan", ">input", "median")
    print(f"{head[0]:34s} {head[1]:>4s} {head[2]:>9s} {head[3]:>6s} {head[4]:>6s} {head[5]:>7s}  returned   stop rule")
    for r in best.values():
        rule = f"eps {r['eps']:g} w {r['slope_window']} p {r['patience']} {r['slope_fit']}"
        rule = "shipped" if r.get("shipped_stop") else rule
        ret = " ".join(f"{t} {v:.2f}" for t, v in r["returned"].items())
        flag = "  MEETS" if meets(r) else ""
        print(
            f"{r['histories']:34s} {r['max_iters']:4d} {r['worst_db']:9.2f} {r['channel_max']:6.2f} "
            f"{r['channel_over_input_max']:6.2f} {r['median_cost']:7.1f}  {ret}  {rule}{flag}"
        )
    passing = [r for r in rows if meets(r)]
    print(f"{len(passing)} of {len(rows)} candidates meet all three targets {TARGETS}")
    if a.adopt:
        record = adopt(
            a.export,
            json.loads(a.adopt.read_text()),
            json.loads(a.previous.read_text()),
            reference,
            input_errors,
            a.cap,
        )
        record.update(reference=a.reference.name, adopted_from=a.adopt.name, previous_from=a.previous.name)
        record["weights_sha256"] = load_manifest(a.export).data["model"]["weights_sha256"]
        accepted = accepted_losses(record, a.accept_loss)
        if accepted:
            record["accepted_losses"] = accepted
        print(json.dumps(record, indent=1))
        if a.write:
            from diip_deploy.manifest import read_data, set_defaults, write_manifest

            data = read_data(a.export)
            set_defaults(data, record["adopted"])
            data.setdefault("validation", {})["few_evals"] = record
            write_manifest(a.export, data)
            print(f"wrote the adopted defaults into {a.export / 'manifest.json'}")
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "tool": "bench/few_evals.py",
                    "targets": TARGETS,
                    "reference": a.reference.name,
                    "best_per_cap": list(best.values()),
                    "meeting": passing,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
