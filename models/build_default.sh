#!/usr/bin/env bash
# How models/default and models/default-export were made (see models/default/README.md).
# Needs: pip install torch==2.13.0 && pip install -e '.[export,train,bench]'
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:?set STEPS to the step count the card names}
models/fetch_photos.sh
diip-train --out models/default --work cache/train --batch 32 --patch 32 --lr 5e-4 --seed 0 \
    --threads 2 --steps "$STEPS"
rm -f models/default/training.json.tmp
diip-export models/default --out models/default-export --steps 5 --gradient both --fused exact --iterate surrogate \
    --lr 0.03 --max-iters 150 --k-min 50
python models/make_card.py --model models/default --export models/default-export
