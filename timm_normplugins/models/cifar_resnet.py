""" Deprecated alias of ``timm_normplugins.models.he_cifar_resnet`` (renamed after what it holds: He et al.'s CIFAR ResNets, ``HeCifarResNet``);
kept for one release, see docs/CHANGELOG.md. Every public name of the new module resolves here, with a
DeprecationWarning when used.
"""

from ..core.deprecation import module_alias

__all__, __getattr__ = module_alias(__name__, 'timm_normplugins.models.he_cifar_resnet')
