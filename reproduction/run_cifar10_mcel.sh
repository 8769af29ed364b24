#!/usr/bin/env bash
# MCEL paper, Figure 5 on the full CIFAR-10 (docs/REPRODUCTION.md, "MCEL paper, Figure 5"): ResNet-32,
# cross-entropy against MCEL (LDA similarity, eps 0.2) under 40 % and 20 % pairwise label noise
# (--label-noise, noise seed 0 for every run), 2 seeds, 15 epochs with the paper's x0.99 per epoch over 500
# kept as the same total decay. Resumable like run_cifar10_wcgc.sh. MAX_MINUTES: start no new run after.
#   bash reproduction/run_cifar10_mcel.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="--dataset cifar10 --data-dir ${CIFAR10_DIR:-../shared/datasets/cifar10} --dataset-as imagefolder"
LIMIT=${MAX_MINUTES:+--max-minutes $MAX_MINUTES}
R="python scripts/reproduce.py --table mcel/figure5 --output ${OUTPUT:-reproduction} $DATA --attack --epochs 15 --variant full $LIMIT"
$R --rows c10_resnet32_noise40 c10_resnet32_mcel_noise40 --seeds 1 '--train-args=--workers 1'
$R --rows c10_resnet32_noise40 c10_resnet32_mcel_noise40 c10_resnet32_noise20 c10_resnet32_mcel_noise20 --seeds 2 '--train-args=--workers 1'
