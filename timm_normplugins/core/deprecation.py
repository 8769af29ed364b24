""" Old module paths kept for one release (docs/CHANGELOG.md lists them). """
import importlib
import warnings
from typing import Callable, List, Tuple

__all__ = ['module_alias']


def module_alias(old: str, new: str) -> Tuple[List[str], Callable[[str], object]]:
    """``(__all__, __getattr__)`` for the alias module ``old``: every public name of ``new`` resolves there, with a
    DeprecationWarning where it is used (PEP 562's module ``__getattr__``), not where the package is imported."""
    target = importlib.import_module(new)

    def __getattr__(name: str):
        if name.startswith('__'):
            raise AttributeError(name)
        value = getattr(target, name)
        warnings.warn(f'{old}.{name} is deprecated: import it from {new}', DeprecationWarning, stacklevel=2)
        return value

    return list(target.__all__), __getattr__
