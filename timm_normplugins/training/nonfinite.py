""" The non-finite guard: no NaN/inf loss goes unnoticed, no non-finite model is saved.

``stop`` (default): a nan/inf loss on any process stops the run; nothing of that epoch is saved. The loss is
checked on the device and read by the host every ``check_every`` steps (the log interval, where the loop syncs
anyway) and at the epoch's end. ``skip``: the step's update is dropped, like AMP's GradScaler (a host decision
per step), and the BatchNorm statistics its forward pass moved are restored. Either way an epoch ends with
finite weights, buffers and validation metrics and at least one update. Decisions are reduced over processes,
so all skip or stop together (one stopping alone would leave the others in the next all-reduce).
"""
import math
from typing import Dict, List, Optional

import torch

from .errors import NonFiniteError

__all__ = ['NonFiniteGuard']

_NEVER = 2 ** 62  # "no bad step yet" as a step index, so that the first bad step is a minimum


class NonFiniteGuard:
    def __init__(self, policy: str, accelerator, check_every: int = 1):
        if policy not in ('stop', 'skip'):
            raise ValueError(f'policy must be stop or skip, got {policy!r}')
        self.skip, self.accelerator, self.check_every = policy == 'skip', accelerator, max(1, check_every)
        self.start_epoch()

    def start_epoch(self) -> None:
        self.steps = self.skipped = 0
        device = self.accelerator.device
        self._first_bad = torch.full((), _NEVER, dtype=torch.int64, device=device)  # first bad step, on the device
        self._bad_input = torch.zeros((), dtype=torch.bool, device=device)  # did that step's batch hold nan/inf?

    def snapshot(self, model: torch.nn.Module) -> Optional[List[torch.Tensor]]:
        """Copies of the buffers (BN statistics) a forward pass updates, to undo a skipped step's (skip only)."""
        return [b.detach().clone() for b in model.buffers()] if self.skip else None

    def _any(self, bad: torch.Tensor) -> bool:
        flag = bad.to(self.accelerator.device, torch.float32).reshape(())
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, 'sum')
        return bool(flag.item())

    def loss_ok(self, loss: torch.Tensor, x: torch.Tensor, epoch: int, step: int, model: torch.nn.Module,
                snapshot: Optional[List[torch.Tensor]]) -> bool:
        """True: train on this loss. False (skip): drop the step. Raises NonFiniteError (stop)."""
        bad = ~torch.isfinite(loss.detach()).all()
        if not self.skip:
            first = bad & (self._first_bad == _NEVER)
            self._first_bad = torch.where(first, step, self._first_bad)
            self._bad_input |= first & ~torch.isfinite(x).all()
            if step % self.check_every == 0:
                self._check_loss(epoch)
            self.steps += 1
            return True
        if not self._any(bad):
            self.steps += 1
            return True
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), snapshot):
                buffer.copy_(saved)
        self.skipped += 1
        return False

    def _check_loss(self, epoch: int) -> None:
        """One host read: raise if any process saw a non-finite loss since the epoch began (stop)."""
        first = self._first_bad.reshape(1)
        if self.accelerator.num_processes > 1:
            first = self.accelerator.gather(first)
        step = int(first.min())
        if step == _NEVER:
            return
        if int(self._first_bad) != step:
            cause = 'on another process'
        elif bool(self._bad_input):
            cause = 'this batch holds non-finite input values'
        else:
            cause = 'the inputs are finite: the weights diverged, is the learning rate too high?'
        raise NonFiniteError(f'non-finite training loss at epoch {epoch + 1}, step {step + 1} ({cause}); stopped, '
                             f'nothing of epoch {epoch + 1} is saved (--nonfinite-loss skip drops such steps instead)')

    def end_epoch(self, epoch: int, model: torch.nn.Module) -> None:
        """After the epoch's last step: no pending bad loss, updates were made, weights and buffers finite."""
        if not self.skip:
            self._check_loss(epoch)
        if self.steps == 0:
            why = f'all {self.skipped} steps had a non-finite loss' if self.skipped else 'the loader gave no batch'
            raise NonFiniteError(f'epoch {epoch + 1} made no optimizer step ({why}); stopping')
        floats = {name: t for name, t in model.state_dict().items() if t.is_floating_point()}
        finite = torch.stack([torch.isfinite(t).all() for t in floats.values()]).cpu()  # one host read
        if self._any(~finite.all()):
            bad = [name for name, ok in zip(floats, finite.tolist()) if not ok]
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
