#!/usr/bin/env bash
# One prepared GPU check of zoo.cyclegan (<= 8 minutes on an H100/H200-class GPU; not run in CI):
#   1. the CUDA tests of the GAN blocks and the trainer,
#   2. s/iteration of the paper's 256 px recipe at batch 8 with bf16 autocast (goal <= 0.3 s on an
#      H100-class GPU; the paper reports ~2 s on a V100),
#   3. a short real run of the gpu preset (300 iterations on 600 synthetic images) and its evaluation.
# Usage: bash benchmarks/gpu_cyclegan.sh [OUT_DIR]
set -euo pipefail
OUT="${1:-${OUT:-runs/gpu-check}}"
mkdir -p "$OUT"
python -m pytest -q tests/zoo/test_gan_blocks.py tests/zoo/test_cyclegan.py -k "cuda" -p no:cacheprovider \
    | tee "$OUT/tests.txt"
python benchmarks/bench_cyclegan.py --presets gpu --device cuda --batch 8 --iters 10 | tee "$OUT/bench.md"
timeout 300 python -m zoo.cyclegan.train --preset gpu --train.out_dir "$OUT/run" --train.steps 300 \
    --data.num_train 600 --data.num_test 100 --data.label_budget 100 --data.num_barycenters 1000 \
    --train.log_every 50 --train.eval_every 300 --train.ckpt_every 300 --train.sample_every 300 \
    --train.progress false | tail -n 5 | tee "$OUT/run.txt"
python -m zoo.cyclegan.evaluate --checkpoint "$OUT/run/checkpoints/last.pt" --json "$OUT/eval.json"
