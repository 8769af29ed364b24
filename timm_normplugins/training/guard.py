""" Deprecated alias of ``nonfinite.py`` (kept for one release; see docs/CHANGELOG.md). """
from .nonfinite import NonFiniteGuard  # noqa: F401

__all__ = ['NonFiniteGuard']
