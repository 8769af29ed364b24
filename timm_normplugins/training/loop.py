""" Deprecated alias of ``train_loop.py`` (kept for one release; see docs/CHANGELOG.md). """
from .train_loop import TrainProgress, evaluate, seed_epoch, use_cpu_cores  # noqa: F401

__all__ = ['seed_epoch', 'evaluate', 'TrainProgress', 'use_cpu_cores']
