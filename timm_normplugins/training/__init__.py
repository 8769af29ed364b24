""" The training recipe (``train_loop.main``; ``recipes/train.py`` and ``timm-normplugins-train`` call it)
and its building blocks. """
from .build import (
    apply_normalization_flags, build_datasets, build_loaders, build_loss, build_mixer, build_model, build_optimizer,
    build_scheduler, check_names, resolve_task,
)
from .config import args_to_yaml, build_parser, check_launch, parse_args, parse_kwargs
from .errors import ConfigError, Interrupted, NonFiniteError, RunWriteError, StateError, TrainingError
from .nonfinite import NonFiniteGuard
from .outputs import RunOutputs, plot_curves
from .state import TrainingState
from .train_loop import TrainProgress, evaluate, main, run_robustness, seed_epoch, use_cpu_cores
