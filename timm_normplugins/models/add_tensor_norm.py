""" Deprecated alias of ``timm_normplugins.retrofit.add_tensor_norm`` (the TN retrofit moved to the retrofit package);
kept for one release, see docs/CHANGELOG.md. Every public name of the new module resolves here, with a
DeprecationWarning when used.
"""

from ..core.deprecation import module_alias

__all__, __getattr__ = module_alias(__name__, 'timm_normplugins.retrofit.add_tensor_norm')
