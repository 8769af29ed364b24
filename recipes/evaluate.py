#!/usr/bin/env python3
""" Robustness evaluation of one or more checkpoints, side by side (see ``timm_normplugins/cli/evaluate.py``).

    python recipes/evaluate.py --checkpoint output/c10_tn_fdt/model.safetensors output/c10_base/model.safetensors \\
        --dataset cifar10 --data-dir ~/data --attack pgd-paper autoattack --num-images 1000 --output reports/c10

Installed: ``timm-normplugins-evaluate`` or ``python -m timm_normplugins evaluate``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install`

from timm_normplugins.cli.evaluate import build_parser, main  # noqa: E402,F401

if __name__ == '__main__':
    main()
