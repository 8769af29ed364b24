#!/usr/bin/env bash
# Every GPU check and benchmark in one call of at most 8 minutes (BUDGET_S, default 460 s of steps), for a
# session that is lent a GPU. Logs and JSON go to $OUT (the device tool's output folder) or ./gpu_check;
# the last step merges them into $OUT/gpu_check.json (scripts/gpu_check_summary.py) and prints it, with the
# issue's goals marked true / false / "unmeasured" (a step that failed or was cut by the budget).
#
# The device image has PyTorch (with Triton), timm, accelerate, safetensors, scikit-learn, but not
# albumentations or torchattacks: fetch their wheels here first (no network there), carry .whl, and the
# script installs them:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl albumentations==2.0.8 albucore==0.0.24 simsimd stringzilla torchattacks==3.5.1 timm==1.0.31 \
#       pydantic pydantic-core annotated-types typing-inspection typing_extensions
#   (the image's timm, 1.0.29 on 2026-12-04, is below this package's floor; albumentations needs pydantic,
#   which the image lacks; torchattacks also wants requests, already there)
# then: run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600)
#
# Steps, most important first: each gets at most its own limit and what is left of the budget, so a slow
# machine loses the last ones (the compiled TN ratios) rather than the whole report. The first run (H200,
# 2026-12-04, docs/BENCHMARKS.md) took 314 s: tests 73 s, TN eager 16 s, optimizers 14 s, mixer over its 30 s
# (3 rounds; 2 fit), full stack 14 s, CIFAR-10 epochs 62 s (one compilation), TN compiled 105 s.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
BUDGET_S=${BUDGET_S:-460}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
START=$(date +%s)
run() {  # run NAME LIMIT_S CMD...: logs to $OUT/NAME.log, never past the budget
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET_S - ($(date +%s) - START) ))
  (( left < limit )) && limit=$left
  if (( limit < 15 )); then echo "== $name: skipped (budget spent)"; return; fi
  echo "== $name (<= ${limit}s): $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "   exit $? after $(( $(date +%s) - START ))s total ($(tail -1 "$OUT/$name.log"))"
}

python3 -c "import torch, timm, triton; print(torch.__version__, timm.__version__, triton.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.log"
run tests_cuda 100 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_kernels.py \
    tests/test_fdt_mixup.py::test_cuda_matches_properties  # the CPU suite is CI's
run bench_tn_eager 60 python3 scripts/bench_tn.py --device cuda --batch-size 256 --iters 20 --dtypes fp32 bf16 \
    --modes eager --models resnet34 --channels-last --json "$OUT/bench_tn_eager.json"
run bench_optim 45 python3 scripts/bench_optim.py --device cuda --iters 100 --bases sgd momentum adamw \
    --variants base wcgc wcgc_torch loop --json "$OUT/bench_optim.json"
run bench_mix 30 python3 scripts/bench_mix.py --device cuda --skip-loop --rounds 3 --json "$OUT/bench_mix.json"
run bench_train 60 python3 scripts/bench_train.py --device cuda --batch-size 256 --mixed-precision bf16 \
    --channels-last --steps 30 --skip-pipeline --json "$OUT/bench_train.json"
run bench_epoch 150 python3 scripts/bench_epoch.py --device cuda --epochs 3 --json "$OUT/bench_epoch.json"
run bench_tn_compiled 200 python3 scripts/bench_tn.py --device cuda --batch-size 256 --iters 20 --dtypes bf16 fp32 \
    --modes compiled --models resnet34 --channels-last --json "$OUT/bench_tn_compiled.json"
python3 scripts/gpu_check_summary.py "$OUT"
echo "logs and gpu_check.json in $OUT ($(( $(date +%s) - START ))s)"
