#!/usr/bin/env bash
# Evaluation only, for a session lent a GPU: the Fashion-MNIST grid's 10 committed models under the PGD
# protocol's second reading (pgd-foolbox) on the grid's 1,000 class-balanced test images, then both readings
# (pgd-paper, pgd-foolbox) on the full 10,000-image test set (docs/REPRODUCTION.md). About 3 minutes on an H200
# (a guess before its first run). Reports come back as $OUT/evals.tgz (paths relative to reproduction/).
# Carry the wheels of gpu_check.sh (.whl, timm included) and the two Fashion-MNIST test files (.fmnist):
#   mkdir -p .fmnist && cp /usr/share/datasets/fashion-mnist/t10k-* .fmnist/ && echo /.fmnist/ >> .git/info/exclude
#   run(command="bash scripts/gpu_fmnist_eval.sh", carry=[".whl", ".fmnist"], timeout_s=420)
# CPU smoke test: DEVICE=cpu N1=20 NFULL=20 STEPS=2 OUT=/tmp/x bash scripts/gpu_fmnist_eval.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_fmnist_eval}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
W=$(mktemp -d)/reproduction
mkdir -p "$W" && cp -r reproduction/fdt_tn "$W/"
find "$W" -type d -name 'eval_foolbox*' -prune -exec rm -rf {} +   # every report of this reading from one device
STEPS_FLAG=${STEPS:+--pgd-steps $STEPS}
R="python3 scripts/reproduce.py --table fdt_tn/table1 --output $W --dataset fashion_mnist --data-dir ${FMNIST_DIR:-.fmnist}
   --stand-in resnet34_cifar=cifar_resnet20 resnet34_tn=cifar_resnet20_tn --variant resnet20 --epochs 20 --seeds 2
   --device ${DEVICE:-cuda} --eval-batch-size 1000 --eps 0.1 0.01 0.001 $STEPS_FLAG"
python3 -c "import torch, timm; print(torch.__version__, timm.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
START=$(date +%s)
timeout "${T1:-80}" $R --attack pgd-foolbox --num-images "${N1:-1000}" > "$OUT/foolbox_1000.log" 2>&1
echo "pgd-foolbox on ${N1:-1000} images: exit $? after $(( $(date +%s) - START )) s"
timeout "${T2:-200}" $R --attack pgd-paper pgd-foolbox --num-images "${NFULL:-10000}" --eval-tag full > "$OUT/full.log" 2>&1
echo "both readings on ${NFULL:-10000} images: exit $? after $(( $(date +%s) - START )) s"
(cd "$W" && find . -name report.json -path '*eval_foolbox*' -o -name report.json -path '*-full/*' | tar czf "$OUT/evals.tgz" -T -)
tar tzf "$OUT/evals.tgz"
