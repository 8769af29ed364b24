""" Finished cells of an evaluation, kept so an interrupted one resumes where it stopped.

A cell is one model under one attack at one ε, counted over every image. When ``evaluate_robustness`` has a
report folder, each finished cell is written to ``OUTPUT/cells/`` (atomically) together with the identity
of what produced it: a hash of the model (its weights, buffers and printed configuration, normalisation
included), a hash of every image and label the loader gave, the attack's settings, the seed, device type,
autocast, and the versions of torch, torchattacks and this package. A later evaluation into the same
folder takes a cell from there only when all of that is equal; anything else (another checkpoint, other
images, a changed setting) recomputes the cell and replaces its record, so two runs are never mixed.
"""
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from .files import write_text_atomic

__all__ = ['CELLS_FOLDER', 'CellRecords', 'model_fingerprint', 'TensorHasher']

_logger = logging.getLogger(__name__)

CELLS_FOLDER = 'cells'
_FORMAT = 1


class TensorHasher:
    """sha256 over a sequence of tensors (dtype, shape and bytes of each)."""

    def __init__(self):
        self._h = hashlib.sha256()

    def update(self, t: torch.Tensor) -> None:
        t = t.detach()
        if t.device.type != 'cpu':
            t = t.cpu()
        self._h.update(f'{t.dtype}{tuple(t.shape)};'.encode())
        if t.numel():  # viewed as bytes: a 0-d tensor is viewed as 1-d first
            self._h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """A hash of ``model``'s state (every parameter and buffer) and of its printed structure, which
    shows the settings that change its gradients (e.g. TN's ``grad=``) and its normalisation."""
    h = TensorHasher()
    h._h.update(repr(model).encode())
    for name, t in model.state_dict().items():
        h._h.update(name.encode())
        h.update(t)
    return h.hexdigest()


def _slug(key: Tuple[str, str, float]) -> str:
    name, attack, eps = key
    readable = re.sub(r'[^A-Za-z0-9_.+-]+', '_', f'{name}__{attack}__{eps!r}')[:120]
    exact = hashlib.sha256(json.dumps([name, attack, eps]).encode()).hexdigest()[:12]
    return f'{readable}__{exact}.json'  # the hash keeps names that differ only in odd characters apart


class CellRecords:
    """``OUTPUT/cells/*.json``: one record per finished cell, with its identity."""

    def __init__(self, output: Path):
        self.folder = Path(output) / CELLS_FOLDER
        self.reused = []

    def path(self, key: Tuple[str, str, float]) -> Path:
        return self.folder / _slug(key)

    def load(self, key: Tuple[str, str, float], identity: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """The stored counts of ``key`` if a record with exactly this identity is there, else None."""
        path = self.path(key)
        if not path.is_file() or path.is_symlink():
            return None
        try:
            record = json.loads(path.read_text(encoding='utf-8'))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            _logger.warning('%s is unreadable: recomputing that cell', path)
            return None
        if not isinstance(record, dict) or record.get('format') != _FORMAT or record.get('key') != list(key) \
                or not isinstance(record.get('counts'), dict):
            _logger.warning('%s is not a cell record of this version: recomputing that cell', path)
            return None
        stored = record.get('identity')
        if stored != json.loads(json.dumps(identity)):
            changed = sorted(k for k in set(identity) | set(stored or {})
                             if (stored or {}).get(k) != json.loads(json.dumps(identity.get(k))))
            _logger.info('%s was computed with another %s: recomputing that cell', path.name, ', '.join(changed))
            return None
        self.reused.append(key)
        return record['counts']

    def save(self, key: Tuple[str, str, float], identity: Mapping[str, Any], counts: Mapping[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {'format': _FORMAT, 'key': list(key), 'identity': dict(identity), 'counts': dict(counts)}
        write_text_atomic(self.path(key), json.dumps(record, indent=1))
