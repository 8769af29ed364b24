""" Deprecated: the traffic counter is a measurement tool and moved to ``scripts/relu_tn_traffic.py``.

Kept for one release (docs/CHANGELOG.md). It works from a source checkout, where scripts/ sits beside the
package; an installed wheel has no scripts/.
"""
import importlib.util
import sys
import warnings
from pathlib import Path

_path = Path(__file__).resolve().parents[2] / 'scripts' / 'relu_tn_traffic.py'
if not _path.is_file():
    raise ImportError(f'timm_normplugins.layers.tn_traffic moved to scripts/relu_tn_traffic.py, which this install '
                      f'does not have ({_path})')
warnings.warn('timm_normplugins.layers.tn_traffic is deprecated: use scripts/relu_tn_traffic.py', DeprecationWarning,
              stacklevel=2)
_module = sys.modules.get('relu_tn_traffic')
if _module is None:
    _spec = importlib.util.spec_from_file_location('relu_tn_traffic', _path)
    _module = sys.modules['relu_tn_traffic'] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
__all__ = list(_module.__all__)
globals().update({k: getattr(_module, k) for k in __all__})
