""" Read a data pickle (CIFAR's python batches) without letting it run code.

``pickle.load`` calls whatever callable a file names, so a crafted ``data_batch_1`` runs code when read.
``load_plain_pickle`` allows only what numpy arrays, lists, dicts, strings and numbers need: the
unpickler resolves nothing but numpy's array/dtype/scalar reconstructors and ``_codecs.encode`` (how
protocol 2 stores bytes); any other global is refused.
"""
import codecs
import pickle
from pathlib import Path
from typing import Any, Union

import numpy as np

__all__ = ['load_plain_pickle']


def _numpy_reconstructors():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return multiarray._reconstruct, multiarray.scalar


_RECONSTRUCT, _SCALAR = _numpy_reconstructors()
_ALLOWED = {
    ('numpy.core.multiarray', '_reconstruct'): _RECONSTRUCT,  # files written by numpy 1.x (CIFAR's own)
    ('numpy._core.multiarray', '_reconstruct'): _RECONSTRUCT,  # ... and by numpy 2
    ('numpy.core.multiarray', 'scalar'): _SCALAR,
    ('numpy._core.multiarray', 'scalar'): _SCALAR,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('_codecs', 'encode'): codecs.encode,
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f'{module}.{name} is not allowed in a data file') from None


def load_plain_pickle(path: Union[str, Path], encoding: str = 'latin1') -> Any:
    """Unpickle ``path`` allowing only numpy arrays, lists, dicts, strings and numbers.

    Raises ``pickle.UnpicklingError`` (or ``EOFError`` for a truncated file); object arrays are refused.
    """
    with open(path, 'rb') as f:
        obj = _PlainUnpickler(f, encoding=encoding).load()
    _refuse_object_arrays(obj)
    return obj


def _refuse_object_arrays(obj: Any) -> None:
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise pickle.UnpicklingError('object arrays are not allowed in a data file')
    if isinstance(obj, dict):
        for value in obj.values():
            _refuse_object_arrays(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _refuse_object_arrays(value)
