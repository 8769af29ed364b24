""" Errors that stop a run once it has started (``ConfigError``, in ``config.py``, stops it before).

Each message is one line that names the file or the cause and what is still intact; ``recipes/train.py``
prints it without a traceback and exits with status 1.
"""

__all__ = ['TrainingError', 'NonFiniteError', 'StateError', 'RunWriteError']


class TrainingError(RuntimeError):
    """A run that cannot go on without giving a wrong or lost result."""


class NonFiniteError(TrainingError):
    """A nan/inf loss, weight or validation metric: the run stops before anything of it is saved."""


class StateError(TrainingError):
    """A state folder that cannot be written, or read without trusting it."""


class RunWriteError(TrainingError):
    """A run file (checkpoint, metrics, summary) that could not be written, e.g. on a full disk."""
