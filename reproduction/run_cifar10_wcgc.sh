#!/usr/bin/env bash
# WC/GC paper, Table 3 on the full CIFAR-10 (docs/REPRODUCTION.md, "WC/GC at full data"): model a) without BN
# (baseline, WC, GC, WC+GC, WC+GC fully, WS, WN) and model c) (baseline, WC+GC), 2 seeds, 15 epochs:
# Adam lr 1e-3 for 10 epochs, then x0.1 (a stated deviation from the paper's x0.1 every 50 of 300 epochs).
# Resumable: finished runs are skipped, an interrupted one continues from its last state (stop it with
# SIGTERM or SIGINT; it saves and exits). Rows run most decisive first. MAX_MINUTES: start no new run after.
#   bash reproduction/run_cifar10_wcgc.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="--dataset cifar10 --data-dir ${CIFAR10_DIR:-../shared/datasets/cifar10} --dataset-as imagefolder"
LIMIT=${MAX_MINUTES:+--max-minutes $MAX_MINUTES}
SCHED='--sched multistep --decay-milestones 11 --decay-rate 0.1'
R="python scripts/reproduce.py --table wcgc/table3 --output ${OUTPUT:-reproduction} $DATA --attack --epochs 15 --variant full $LIMIT"
$R --rows t3_c10_a_baseline t3_c10_a_wc_gc_fully --seeds 1 "--train-args=--workers 1 $SCHED"
$R --rows t3_c10_a_baseline t3_c10_a_wc_gc_fully --seeds 2 "--train-args=--workers 1 $SCHED"
$R --rows t3_c10_a_wc t3_c10_a_wn t3_c10_a_ws t3_c10_c_baseline t3_c10_c_wc_gc --seeds 2 "--train-args=--workers 1 $SCHED"
$R --rows t3_c10_a_gc t3_c10_a_wc_gc --seeds 2 "--train-args=--workers 1 $SCHED"
