#!/usr/bin/env bash
# One prepared GPU check of zoo.brule (<= 8 minutes on an H100/H200-class GPU; not run in CI):
#   1. the CUDA test of the trainer (bf16 autocast, every block of Algorithms 1-2),
#   2. a short real run of the gpu preset (256 px, 64x64 heatmaps, batch 8, bf16; 200 iterations on
#      600 synthetic images; iterations/s in its closing line and logs/train.csv),
#   3. its evaluation (nme, ot_nme, linear_probe_nme, the barycenter baseline, stability).
# Usage: bash benchmarks/gpu_brule.sh [OUT_DIR]
set -euo pipefail
OUT="${1:-${OUT:-runs/gpu-brule}}"
mkdir -p "$OUT"
python -m pytest -q tests/zoo/test_brule.py -k "cuda" -p no:cacheprovider | tee "$OUT/tests.txt"
timeout 360 python -m zoo.brule.train --preset gpu --train.out_dir "$OUT/run" --train.steps 200 \
    --data.num_train 600 --data.num_test 100 --data.label_budget 100 --data.barycenter_iters 30 \
    --train.log_every 50 --train.eval_every 200 --train.ckpt_every 200 --train.sample_every 200 \
    --train.progress false | tail -n 5 | tee "$OUT/run.txt"
python -m zoo.brule.evaluate --checkpoint "$OUT/run/checkpoints/last.pt" --json "$OUT/eval.json"
