""" Train a timm model with Tensor Normalization, FDT, MCEL and WC/GC under Accelerate.

    accelerate launch recipes/train.py                       # the main job: TN + FDT + sgd_wcgc on digits
    accelerate launch recipes/train.py --config recipes/configs/fdt_tn/c10_resnet34_tn_fdt.yaml --data-dir ~/data
    accelerate launch --multi_gpu --num_processes 2 recipes/train.py --epochs 1   # 2 CPU processes without a GPU
    accelerate launch recipes/train.py --resume output/RUN   # continue a run with its own settings
    python recipes/train.py --help                           # every flag (timm's train.py names)
    timm-normplugins-train -c fdt_tn/c10_resnet34_tn_fdt.yaml  # installed: the same main, a packaged config

The recipe and its loop are ``timm_normplugins.training.train_loop``; this module is its command line.

Writes to --output/--experiment: model.safetensors (last) and model_best.safetensors, args.yaml (replays
the run), metrics.csv, summary.json, curves.png and state/ (for --resume). What a kill, a full disk or a
NaN does to a run: docs/RECIPES.md, "Failure behaviour".
"""
import sys
from pathlib import Path

from timm_normplugins.checkpoint import CheckpointError
from timm_normplugins.data import DataFileError, DatasetNotFoundError
from timm_normplugins.training import ConfigError, Interrupted, TrainingError
from timm_normplugins.training.train_loop import exit_status, main, skipped_steps, train  # noqa: F401

__all__ = ['main', 'cli', 'console']


def cli(argv=None) -> int:
    """``main`` with the recipe's own errors as one line on stderr and exit status 1 (no traceback); SIGINT or
    SIGTERM: one line and 128 + the signal's number, as a shell reports a process the signal ended."""
    try:
        return main(argv)
    except (ConfigError, TrainingError, DatasetNotFoundError, DataFileError, CheckpointError) as e:
        print(f'{Path(sys.argv[0]).name}: error: {e}', file=sys.stderr, flush=True)
        return 1
    except Interrupted as e:
        print(f'{Path(sys.argv[0]).name}: interrupted by {e}; summary.json says so, --resume continues the run',
              file=sys.stderr, flush=True)
        return 128 + e.signum


def console() -> None:
    """The ``timm-normplugins-train`` command."""
    sys.exit(cli())


if __name__ == '__main__':
    sys.exit(cli())
