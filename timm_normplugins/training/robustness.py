""" Deprecated alias of ``train_loop.run_robustness`` (kept for one release; see docs/CHANGELOG.md). """
from ..core.deprecation import module_alias

__all__, __getattr__ = module_alias(__name__, 'timm_normplugins.training.train_loop')
