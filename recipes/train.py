#!/usr/bin/env python
""" Train a timm model with Tensor Normalization, FDT, MCEL and WC/GC under Accelerate.

    accelerate launch recipes/train.py                       # the main job: TN + FDT + sgd_wcgc on digits
    accelerate launch recipes/train.py -c recipes/configs/fdt_tn/c10_resnet34_tn_fdt.yaml --data-dir ~/data
    accelerate launch recipes/train.py -c timm_output/args.yaml --mixup 0.2 --cutmix 1.0 --amp  # timm habits
    accelerate launch --multi_gpu --num_processes 2 recipes/train.py --epochs 1   # 2 CPU processes without a GPU
    accelerate launch recipes/train.py --resume output/RUN   # continue a run with its own settings
    python recipes/train.py --help                           # every flag (timm's train.py names)

The recipe itself is ``timm_normplugins/cli/train.py`` (installed as the ``timm-normplugins-train``
command and ``python -m timm_normplugins train``); the loop is readable there, its building blocks in
``timm_normplugins/training/``. Flags: docs/RECIPES.md.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install`

from timm_normplugins.cli.train import cli, main  # noqa: E402,F401  (tests import main from here)

if __name__ == '__main__':
    sys.exit(cli())
