""" The non-finite guard: no NaN/inf loss reaches the weights unnoticed, no non-finite model is saved.

``--nonfinite-loss stop`` (default): the first step whose loss is nan/inf on any process stops the run
before its backward pass, so nothing of that epoch is saved. ``skip``: that step's update is dropped --
as timm users know from AMP's GradScaler, which drops steps with inf gradients -- and BatchNorm's running
statistics are restored to what they were before its forward pass. Either way an epoch ends with the
weights and buffers checked finite and the validation metrics checked finite, and an epoch without a
single update stops the run: what is saved (``model.safetensors``, ``model_best.safetensors``, the state)
is always finite.

The decision is collective: the flag is summed over processes, so all skip or stop together (a process
stopping alone would leave the others waiting in the next gradient all-reduce).
"""
import math
from typing import Dict, List, Optional

import torch

from .errors import NonFiniteError

__all__ = ['NonFiniteGuard']


class NonFiniteGuard:
    def __init__(self, policy: str, accelerator):
        if policy not in ('stop', 'skip'):
            raise ValueError(f'policy must be stop or skip, got {policy!r}')
        self.skip, self.accelerator = policy == 'skip', accelerator
        self.steps = self.skipped = 0

    def start_epoch(self) -> None:
        self.steps = self.skipped = 0

    def snapshot(self, model: torch.nn.Module) -> Optional[List[torch.Tensor]]:
        """Copies of the buffers (BN statistics) a forward pass updates, to undo a skipped step's (skip only)."""
        return [b.detach().clone() for b in model.buffers()] if self.skip else None

    def _any(self, bad: bool) -> bool:
        flag = torch.tensor(float(bad), device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, 'sum')
        return bool(flag.item())

    def loss_ok(self, loss: torch.Tensor, x: torch.Tensor, epoch: int, step: int, model: torch.nn.Module,
                snapshot: Optional[List[torch.Tensor]]) -> bool:
        """True: train on this loss. False (skip): drop the step. Raises NonFiniteError (stop)."""
        local_bad = not bool(torch.isfinite(loss.detach()).all())
        if not self._any(local_bad):
            self.steps += 1
            return True
        if not self.skip:
            if not local_bad:
                cause = 'on another process'
            elif not bool(torch.isfinite(x).all()):
                cause = 'this batch holds non-finite input values'
            else:
                cause = 'the inputs are finite: the weights diverged, is the learning rate too high?'
            raise NonFiniteError(f'non-finite training loss at epoch {epoch + 1}, step {step + 1} ({cause}); stopped '
                                 f'before applying it, nothing of epoch {epoch + 1} is saved (--nonfinite-loss skip '
                                 'drops such steps instead)')
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), snapshot):
                buffer.copy_(saved)
        self.skipped += 1
        return False

    def end_epoch(self, epoch: int, model: torch.nn.Module) -> None:
        """After the epoch's last step: it made updates, and the weights and buffers are finite."""
        if self.steps == 0:
            why = f'all {self.skipped} steps had a non-finite loss' if self.skipped else 'the loader gave no batch'
            raise NonFiniteError(f'epoch {epoch + 1} made no optimizer step ({why}); stopping')
        bad = [name for name, t in model.state_dict().items()
               if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if self._any(bool(bad)):
            names = ', '.join(bad[:3]) + (', ...' if len(bad) > 3 else '') or 'on another process'
            raise NonFiniteError(f'epoch {epoch + 1} left non-finite weights or buffers ({names}); stopping before '
                                 'they are saved')

    @staticmethod
    def check_metrics(epoch: int, metrics: Dict[str, float]) -> None:
        """Validation metrics are gathered, so every process sees the same values and raises together."""
        bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise NonFiniteError(f'epoch {epoch + 1}: non-finite validation {", ".join(bad)}; stopping before the '
                                 'model is saved')
