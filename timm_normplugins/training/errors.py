""" The recipe's errors: each message is one line naming the file or flag; ``cli`` prints it and exits 1. """

__all__ = ['ConfigError', 'TrainingError', 'NonFiniteError', 'StateError', 'RunWriteError', 'Interrupted']


class ConfigError(ValueError):
    """A configuration that cannot run (unknown names, bad keys); raised before any training."""


class TrainingError(RuntimeError):
    """A run that cannot go on without giving a wrong or lost result."""


class NonFiniteError(TrainingError):
    """A nan/inf loss, weight or validation metric: the run stops before anything of it is saved."""


class StateError(TrainingError):
    """A state folder that cannot be written, or read without trusting it."""


class RunWriteError(TrainingError):
    """A run file (checkpoint, metrics, summary) that could not be written, e.g. on a full disk."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: the run stops where it is; its last saved epoch is resumable."""

    def __init__(self, signum: int):
        import signal
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
