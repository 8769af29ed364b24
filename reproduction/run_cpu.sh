#!/usr/bin/env bash
# The reproduction runs committed in reproduction/ (2-core x86_64 CPU, no GPU; see docs/REPRODUCTION.md).
# Subsets: 3,000 class-balanced training images (300 per class), 1,000 test images for clean accuracy,
# the first 50 of a class-balanced test subset for the PGD protocol (eps 0.1 and 0.01) and 25 for AutoAttack.
# bf16 autocast + channels_last for training; attacks in fp32. Resumable: rerunning skips what is done.
# Ordered by priority: a CPU session that runs out of time drops the last blocks.
set -euo pipefail
cd "$(dirname "$0")/.."
C10="--dataset cifar10 --data-dir ../shared/datasets/cifar10 --dataset-as imagefolder"
FM="--dataset fashion_mnist --data-dir /usr/share/datasets/fashion-mnist"   # apt-get install dataset-fashion-mnist
SUB="--max-train-samples 3000 --max-val-samples 1000 --num-images 50 --autoattack-images 25 --eps 0.1 0.01"
TRAIN='--train-args=--workers 2 --mixed-precision bf16 --channels-last'
R="python scripts/reproduce.py --output reproduction"

# FDT/TN Table 1, CIFAR-10: 5 rows x 2 seeds, 5 epochs (one epoch per learning-rate stage)
$R --table fdt_tn/table1 $C10 $SUB --epochs 5 --seeds 2 --attack pgd-paper autoattack "$TRAIN"
# WC/GC Table 3, CIFAR-10, model b (ResNet-34 with BN): baseline, GC, WC, WC+GC
$R --table wcgc/table3 --rows t3_c10_b_bn_baseline t3_c10_b_bn_gc t3_c10_b_bn_wc t3_c10_b_bn_wc_gc $C10 $SUB \
   --epochs 5 --seeds 1 --attack "$TRAIN"
# MCEL on CIFAR-10 (ResNet-34, LDA similarity): eps 0 (= CE), 0.2, 0.35
$R --table mcel/table1 --rows c10_resnet34 $C10 $SUB --epochs 5 --seeds 1 --attack "$TRAIN"
$R --table mcel/table1 --rows c10_resnet34_mcel $C10 $SUB --epochs 5 --seeds 1 --attack --variant eps0.2 \
   '--train-args=--workers 2 --mixed-precision bf16 --channels-last --mcel-eps 0.2'
$R --table mcel/table1 --rows c10_resnet34_mcel $C10 $SUB --epochs 5 --seeds 1 --attack "$TRAIN"
# Schedule length: the baseline and FDT rows again on 3 epochs (1 seed), then the comparison table + plot
$R --table fdt_tn/table1 --rows c10_baseline c10_fdt $C10 $SUB --epochs 3 --seeds 1 --attack pgd-paper "$TRAIN"
$R --table fdt_tn/table1 --dataset cifar10 --compare-lengths
# FDT/TN Table 1, Fashion-MNIST: baseline and FDT, 1 seed, 3 epochs
$R --table fdt_tn/table1 --rows fmnist_baseline fmnist_fdt $FM $SUB --epochs 3 --seeds 1 --attack pgd-paper "$TRAIN"
