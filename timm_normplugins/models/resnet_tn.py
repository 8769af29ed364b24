""" Deprecated alias of ``timm_normplugins.models.resnet_cifar`` (renamed after what it holds: timm's ResNet with the CIFAR stem, ``CifarResNet``);
kept for one release, see docs/CHANGELOG.md. Every public name of the new module resolves here, with a
DeprecationWarning when used.
"""
import sys
import warnings

import timm_normplugins.models.resnet_cifar  # noqa: F401

_target = sys.modules['timm_normplugins.models.resnet_cifar']
__all__ = list(_target.__all__)


def __getattr__(name: str):
    # module-level __getattr__ (PEP 562): warn where an old import path is used, not where the package loads
    if name.startswith('__'):
        raise AttributeError(name)
    value = getattr(_target, name)
    warnings.warn(f'{__name__}.{name} is deprecated: import it from {_target.__name__}', DeprecationWarning,
                  stacklevel=2)
    return value
