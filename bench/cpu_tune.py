"""Region-sized histories on training photos, for the CPU speed defaults (issue 18).

The shipped stop was tuned on 64x64 crops; a photo's region stops on the summed loss of
its tiles, which is smoother.  ``record`` restores region-sized crops of *training* photos
(never the held-out ones) as ``diip-run`` does (image scope, joint loop) to a cap with no
stop, once per (learning rate, tile overlap), and keeps per iteration the region's summed
loss, Laplacian variance, PSNR against the clean crop, the residual guard's correlation
and the seam ratio.  ``choose`` replays the runtime's own ``decide`` and guard rule over
those histories for each candidate and writes the scores beside the choice.

    python bench/cpu_tune.py record --out bench/results/cpu_tune_histories.json
    python bench/cpu_tune.py choose --histories bench/results/cpu_tune_histories.json

``steps`` chooses Adam steps per evaluation of the chain and the cap in evaluations from
region histories recorded with ``record --steps-per-eval N`` against one step:

    python bench/cpu_tune.py record --configs 0.03@8 --tasks noise25 --iters 100 \
        --out bench/results/cpu_tune_region_histories_steps1.json
    python bench/cpu_tune.py record --configs 0.03@8 --iters 60 --steps-per-eval 2 \
        --out bench/results/cpu_tune_region_histories_steps2.json
    python bench/cpu_tune.py steps --histories bench/results/cpu_tune_region_histories_steps2.json \
        --reference-histories bench/results/cpu_tune_region_histories_steps1.json [--write]

``jpeg-cap`` asks what the JPEG crops' stop-rule score would cost: training crops run with
the shipped optimiser to twice its cap, scored at each cap against the starting defaults:

    diip-tune record --export models/default-export --n 12 --task noise25 --task jpeg10 \
        --max-iters 80 --threads 2 --out bench/results/cpu_tune_crop_histories_steps2.json
    python bench/cpu_tune.py jpeg-cap
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cpu_tune_regions import choose, record
from cpu_tune_studies import heldout, jpeg_cap, optimiser, steps

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
# (option, its default in bench/results, what it holds): the files the modes read
RESULT_FILES = (
    ("--optimiser-choice", "cpu_tune_optimiser_choice.json", "optimiser: where its choice is written"),
    ("--optimiser-histories", "cpu_tune_optimiser_histories.json", "optimiser: its candidates' crop histories"),
    ("--heldout-histories", "tune_heldout_histories.json", "heldout: crops under the starting defaults"),
    (
        "--shipped-heldout-histories",
        "tune_heldout_histories_shipped.json",
        "held-out crops recorded with the shipped optimiser (diip-tune record --held-out)",
    ),
    (
        "--study-heldout-histories",
        "tune_heldout_histories_betas_0.7_0.99.json",
        "held-out crops recorded with the optimiser study's pick",
    ),
    (
        "--reference-histories",
        "cpu_tune_histories.json",
        "choose: region histories of the optimiser the optimiser step started from",
    ),
    ("--histories", "cpu_tune_histories.json", "region histories (record's --out)"),
    ("--crop-histories", "tune_histories.json", "diip-tune's training crops, one step per evaluation, to 150"),
    (
        "--crop-histories-steps",
        "cpu_tune_crop_histories_steps2.json",
        "jpeg-cap: training crops recorded with the shipped optimiser past its cap (diip-tune record)",
    ),
    (
        "--crop-guard-histories",
        "cpu_tune_crop_histories_guard.json",
        "steps: training crops recorded with the shipped optimiser (diip-tune record), for the early guard",
    ),
    ("--cpu-results", "cpu.json", "jpeg-cap: bench/cpu.py's results"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("record", "choose", "heldout", "optimiser", "steps", "jpeg-cap"))
    ap.add_argument("--steps-per-eval", type=int, default=1, help="record: Adam steps per evaluation of the chain")
    ap.add_argument("--candidates", default="0.03/0.9/0.999,0.03/0.8/0.99", help="lr/beta1/beta2, comma separated")
    ap.add_argument("--crops", type=int, default=12, help="optimiser: training crops a task")
    for flag, name, what in RESULT_FILES:
        ap.add_argument(flag, type=Path, default=RESULTS / name, help=what)
    ap.add_argument("--max-loss-db", type=float, default=0.1)
    ap.add_argument("--write", action="store_true", help="write the choice into the export's manifest")
    ap.add_argument(
        "--not-adopted",
        metavar="WHY",
        default=None,
        help="optimiser --write: record the study in the manifest, defaults unchanged, with why",
    )
    ap.add_argument("--export", type=Path, default=REPO / "models" / "default-export")
    ap.add_argument("--photos", default="skimage/astronaut,skimage/motorcycle_left")
    ap.add_argument("--tasks", default="noise25,jpeg10")
    ap.add_argument("--configs", default="0.03@16,0.1@16,0.1@8", help="lr@overlap, comma separated")
    ap.add_argument("--crop", type=int, default=160)
    ap.add_argument("--iters", type=int, default=90)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "cpu_tune_histories.json")
    args = ap.parse_args()
    if args.mode == "record":
        record(args)
        print(f"wrote {args.out}", file=sys.stderr)
        return
    if args.mode == "optimiser":
        choice = optimiser(args)
        print(json.dumps(choice, indent=1))
        args.optimiser_choice.write_text(json.dumps(choice, indent=1) + "\n")
        if args.write:
            from diip_deploy.manifest import read_data, set_defaults, write_manifest

            data = read_data(args.export)
            speed = data.setdefault("validation", {}).setdefault("cpu_speed", {})
            study = {k: v for k, v in choice.items() if k != "chosen"}
            study["crop_choice"] = choice["chosen"]  # the manifest's shape of the study
            if args.not_adopted:  # the study recorded beside the defaults, which stay
                speed["optimiser"] = {**speed.get("optimiser", {}), **study, "adopted": False, "why": args.not_adopted}
                what = f"the study, not adopted ({args.not_adopted})"
            else:
                set_defaults(data, {**data["defaults"], **choice["chosen"]})
                speed["optimiser"] = {**study, "adopted": True}
                what = str(choice["chosen"])
            write_manifest(args.export, data)
            print(f"wrote {what} into {args.export}/manifest.json", file=sys.stderr)
        return
    if args.mode == "steps":
        choice = steps(args)
        out = REPO / "bench" / "results" / "cpu_tune_steps_choice.json"
        out.write_text(json.dumps(choice, indent=1) + "\n")
        if args.write:
            from diip_deploy.manifest import read_data, set_defaults, write_manifest

            data = read_data(args.export)
            set_defaults(
                data,
                {
                    "steps_per_eval": choice["steps_per_eval"],
                    "max_iters": choice["max_iters"]["chosen"],
                    "guard_at": choice["guard_at"]["chosen"],
                },
            )
            speed = data.setdefault("validation", {}).setdefault("cpu_speed", {})
            speed["steps_per_eval"] = choice
            for name in ("max_iters", "guard_at"):  # now chosen in evaluations; the one-step choice kept
                earlier = speed.get(name, {})
                earlier = earlier.get("one_step_choice", earlier) if isinstance(earlier, dict) else earlier
                speed[name] = {
                    "chosen": choice[name]["chosen"],
                    "from": "validation.cpu_speed.steps_per_eval",
                    "one_step_choice": earlier,
                }
            write_manifest(args.export, data)
            print(f"wrote {args.export}/manifest.json", file=sys.stderr)
        return
    if args.mode == "jpeg-cap":
        out = jpeg_cap(args)
        print(json.dumps(out, indent=1))
        (REPO / "bench" / "results" / "cpu_jpeg_cap.json").write_text(json.dumps(out, indent=1) + "\n")
        return
    if args.mode == "heldout":
        (REPO / "bench" / "results" / "cpu_heldout_scores.json").write_text(json.dumps(heldout(args), indent=1) + "\n")
        return
    choice = choose(args)
    out = args.out.with_name("cpu_tune_choice.json") if args.out.name.endswith("histories.json") else args.out
    out.write_text(json.dumps(choice, indent=1) + "\n")
    if args.write:
        from diip_deploy.manifest import read_data, set_defaults, write_manifest

        data = read_data(args.export)
        chosen = {k: choice[k]["chosen"] for k in ("max_iters", "tile_overlap", "guard_at")}
        set_defaults(data, {**data["defaults"], **chosen})
        earlier = data.setdefault("validation", {}).get("cpu_speed", {})
        data["validation"]["cpu_speed"] = {
            "tool": "bench/cpu_tune.py choose",
            **choice,
            **({"optimiser": earlier["optimiser"]} if "optimiser" in earlier else {}),
        }
        write_manifest(args.export, data)
        print(f"wrote {chosen} into {args.export}/manifest.json", file=sys.stderr)


if __name__ == "__main__":
    main()
