#!/usr/bin/env bash
# Every GPU check and benchmark in one call (about 8 minutes on an H100), for a session that is lent a GPU.
# Logs go to $OUT (the device tool's output folder) or ./gpu_check.
#
# The device image has PyTorch, timm, accelerate, safetensors, scikit-learn, but not albumentations or
# torchattacks: fetch their wheels here first (no network there), carry .whl, and the script installs them:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl albumentations==2.0.8 albucore==0.0.24 simsimd stringzilla torchattacks==3.5.1
#   (torchattacks also wants requests, already there)
# then: run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
run() { local name=$1; shift; echo "== $name: $*"; timeout 240 "$@" > "$OUT/$name.log" 2>&1; echo "   exit $? ($(tail -1 "$OUT/$name.log"))"; }

python3 -c "import torch, timm; print(torch.__version__, timm.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.log"
run tests_cuda python3 -m pytest -q -x tests/test_fdt_mixup.py tests/test_tensor_norm.py tests/test_optim_wcgc.py
run bench_tn python3 scripts/bench_tn.py --device cuda --batch-size 256 --iters 20 --dtypes fp32 bf16 --modes eager compiled --models resnet34
run bench_optim python3 scripts/bench_optim.py --device cuda --iters 200 --bases sgd momentum adamw
run bench_mix python3 scripts/bench_mix.py --device cuda
run bench_attack python3 scripts/bench_attack.py --device cuda
run bench_train python3 scripts/bench_train.py --device cuda --batch-size 256 --mixed-precision bf16 --channels-last --compile --steps 30
echo "logs in $OUT"
