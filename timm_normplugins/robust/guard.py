""" Side-effect-free attack calls.

torchattacks' APGD, APGD-T, FAB and Square call ``torch.manual_seed`` inside (so a seeded training
or evaluation script silently continues from their seed), FAB calls ``.backward()`` and leaves
``.grad`` on the model's parameters, and every attack flips the model to eval and back.
``attack_guard`` runs a block with the model in eval mode and its parameters frozen (gradients are
taken only w.r.t. the input), optionally seeded, and restores the caller's RNG state, training
mode, ``requires_grad`` flags and ``.grad`` afterwards.
"""
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn as nn

__all__ = ['attack_guard']


def _rng_devices(model: nn.Module):
    """CUDA devices whose RNG state to save: the model's, and the current one, which torchattacks reseeds."""
    devices = {p.device.index or 0 for p in model.parameters() if p.device.type == 'cuda'}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        devices.add(torch.cuda.current_device())
    return sorted(devices)


@contextmanager
def attack_guard(model: nn.Module, seed: Optional[int] = None) -> Iterator[nn.Module]:
    """Run an attack on ``model`` without side effects on it or on the global RNG.

    Args:
        model: the (pixel-space) model the attack uses.
        seed: if given, the global RNG is seeded with it inside the block (e.g. PGD's random start);
            the caller's state is restored on exit either way.
    """
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    was_training = model.training
    model.eval()  # BatchNorm statistics must never move during an attack
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.random.fork_rng(devices=_rng_devices(model)):
            if seed is not None:
                torch.manual_seed(seed)
            yield model
    finally:
        for p, flag, grad in zip(params, requires_grad, grads):
            p.requires_grad_(flag)
            p.grad = grad
        model.train(was_training)
