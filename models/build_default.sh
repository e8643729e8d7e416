#!/usr/bin/env bash
# How models/default and models/default-export were made (see models/default/README.md).
# Needs: pip install torch==2.13.0 && pip install -e '.[export,train,bench]'
# Three stages: the first prior (42 photos, 32x32 patches); direct-more (issue 27), which
# continues its EMA weights with a fresh optimiser on the 198 photos of --photo-set more;
# focus-new, which continues direct-more's EMA with a fresh optimiser and half of each
# batch at the shipped chain's own timesteps.
# Thread counts change floating-point sums, so a rerun lands near, not on, the shipped bits
# (direct-more ran one thread for its first 1,000 steps, focus-new for its first 2,000, then two).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:?set STEPS to the step count of the first stage that the card names, 4000}
MORE_STEPS=${MORE_STEPS:-4000}
FOCUS_STEPS=${FOCUS_STEPS:-3500}
W=${WORK:-cache}
models/fetch_photos.sh --more
diip-train --out "$W/first-stage" --work "$W/train" --batch 32 --patch 32 --lr 5e-4 --seed 0 \
    --threads 2 --steps "$STEPS"
diip-train --init-from "$W/first-stage" --out "$W/direct-more" --work "$W/train-more" --photo-set more \
    --patch 64 --batch 16 --lr 2e-4 --seed 4 --channels 32,64,128 --threads 2 --steps "$MORE_STEPS" \
    --checkpoint-every 100 --keep-every 500
diip-train --init-from "$W/direct-more" --out models/default --work "$W/train-focus" --photo-set more \
    --patch 64 --batch 16 --lr 1e-4 --seed 7 --channels 32,64,128 --threads 2 --steps "$FOCUS_STEPS" \
    --focus-fraction 0.5 --focus-timesteps 700,450,250,100,20 --checkpoint-every 100 --keep-every 500
rm -f models/default/training.json.tmp
cp "$W/first-stage/training.json" models/default/training_first_stage.json
cp "$W/direct-more/training.json" models/default/training_second_stage.json
# The defaults and records come from the export this prior replaced, named by CARRY_FROM
# (each record marked with the weights it was measured on; without it, the settings' own
# defaults); bench/few_evals.py --adopt ... --write then records the
# shipped defaults' scores on these weights (models/default/README.md, "The prior before and after").
# Adam's beta2 of 0.95 (the thirteenth session) was adopted the same way, from
# bench/results/adam_beta2/histories_b2_0.95_cap150.json (docs/method.md, "The optimisation").
diip-export models/default --out models/default-export --timesteps 700,450,250,100,20 --gradient both \
    --fused exact --iterate surrogate ${CARRY_FROM:+--carry-from "$CARRY_FROM"}
# On a CPU with native bf16 (AVX-512 BF16 or AMX), diip-variants checks OpenVINO bf16 on
# validation crops and records it, so that --backend auto may run it (the shipped export's was).
diip-variants models/default-export
python models/make_card.py --model models/default --export models/default-export
