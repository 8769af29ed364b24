#!/usr/bin/env bash
# A control for claim C2 of the Fashion-MNIST grid (docs/REPRODUCTION.md, first section), not in the paper:
# OV and FDT with every sample superimposing all 10 classes (--fdt-min-images 10), the literal reading of
# Alg. 2's max(C, RND), against the grid's uniform 1..10. Everything else as reproduction/run_fmnist.sh
# (same stand-in, schedule, evaluation and resumability); results land in reproduction/fdt_tn/controls/.
# Run it after run_fmnist.sh has finished (it competes for the same cores). SEEDS (default 2) seeds per row.
#   bash reproduction/run_fmnist_control.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FM="--dataset fashion_mnist --data-dir ${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}"
R50="--stand-in resnet34_cifar=cifar_resnet20 --variant resnet20"
EVAL="--attack pgd-paper pgd-foolbox autoattack --num-images 1000 --autoattack-images 200 --eps 0.1 0.01 0.001"
LIMIT=${MAX_MINUTES:+--max-minutes $MAX_MINUTES}
R="python scripts/reproduce.py --table fdt_tn/controls --output ${OUTPUT:-reproduction} $FM $R50 $EVAL --epochs ${EPOCHS:-20} $LIMIT"
$R --seeds 1 '--train-args=--workers 1 --channels-last'            # one seed of each row first
$R --seeds "${SEEDS:-2}" '--train-args=--workers 1 --channels-last'
