""" The training recipe's building blocks (``recipes/train.py`` is the script that uses them). """
from .build import (
    apply_normalization_flags, build_datasets, build_loaders, build_loss, build_mixer, build_model, build_optimizer,
    build_scheduler, check_names, resolve_task,
)
from .config import ConfigError, args_to_yaml, build_parser, check_launch, parse_args, parse_kwargs
from .errors import NonFiniteError, RunWriteError, StateError, TrainingError
from .guard import NonFiniteGuard
from .loop import TrainProgress, evaluate, seed_epoch, use_cpu_cores
from .outputs import RunOutputs, plot_curves
from .robustness import run_robustness
from .state import TrainingState
