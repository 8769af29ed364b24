""" Retrofit Tensor Normalization into an existing network. """
import torch.nn as nn

from ..layers import ReLUTN, TN_GRAD_MODES

__all__ = ['add_tensor_norm']


def add_tensor_norm(model: nn.Module, grad: str = 'exact') -> int:
    """Put TN after every ``nn.ReLU`` module of ``model``, in place; returns how many were converted.

    Works on any timm CNN whose activations are ``nn.ReLU`` modules (ResNets, VGG, DenseNet, ...).
    Pretrained weights stay valid since TN has no parameters, although the features they compute
    change. ReLUs applied functionally (``F.relu`` inside a ``forward``) cannot be found this way.
    """
    if grad not in TN_GRAD_MODES:
        raise ValueError(f'TN gradient mode must be one of {TN_GRAD_MODES}, got {grad!r}')
    targets = [(name, m) for name, m in model.named_modules() if name and type(m) is nn.ReLU]
    if not targets:
        raise ValueError(
            f'{type(model).__name__} has no nn.ReLU module to put TN after (its activations are '
            f'{sorted({type(m).__name__ for m in model.modules() if _looks_like_activation(m)}) or "not modules"})')
    for name, relu in targets:
        parent_name, _, child_name = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, ReLUTN(inplace=relu.inplace, grad=grad))
    # lets save_model record the retrofit so load_model can redo it
    model.tensor_norm_retrofit = grad
    return len(targets)


def _looks_like_activation(m: nn.Module) -> bool:
    return type(m).__module__.startswith('torch.nn.modules.activation') or 'act' in type(m).__name__.lower()
