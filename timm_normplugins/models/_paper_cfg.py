""" Default pretrained cfg shared by the papers' models.

The cfg carries the papers' normalisation (``core/paper_norm.py``), so
``timm.data.resolve_data_config(model=...)`` reproduces it exactly.
"""
from typing import Any, Dict

from ..core.paper_norm import (  # noqa: F401  (re-exported: models/ and tests import them from here)
    PAPER_GREY_MEAN_PIXELS, PAPER_MEAN, PAPER_MEAN_PIXELS, PAPER_STD, PAPER_STD_PIXELS, paper_mean_std)

__all__ = ['PAPER_MEAN_PIXELS', 'PAPER_GREY_MEAN_PIXELS', 'PAPER_STD_PIXELS', 'PAPER_MEAN', 'PAPER_STD',
           'paper_mean_std', 'paper_cfg', 'plugin_cfg_overlay']


def paper_cfg(input_size=(3, 32, 32), num_classes: int = 10, **kwargs) -> Dict[str, Any]:
    return {
        'url': '', 'num_classes': num_classes, 'input_size': input_size,
        'crop_pct': 1.0, 'interpolation': 'bilinear',
        'mean': PAPER_MEAN, 'std': PAPER_STD,
        'license': 'apache-2.0',
        **kwargs,
    }


_WEIGHT_SOURCES = ('file', 'url')


def plugin_cfg_overlay(kwargs: Dict[str, Any], img_size=(32, 32)) -> Dict[str, Any]:
    """Adjust the pretrained cfg overlay of a model-creation call (the caller's keys win).

    * ``in_chans=1``: the cfg describes a 1-channel model (grey mean, input size).
    * a weight file/url: load it through the model's own loader (``checkpoint.CheckedLoadMixin``), which
      keeps timm's semantics (classifier dropped on another class count, first conv adapted to ``in_chans``)
      but decides from the file's shapes, not the cfg's class count, and refuses any other mismatch.
    """
    overlay = {}
    in_chans = kwargs.get('in_chans', 3)
    if in_chans != 3:
        mean, std = paper_mean_std(in_chans)
        overlay.update(mean=mean, std=std, input_size=(in_chans, *img_size))
    user_overlay = dict(kwargs.get('pretrained_cfg_overlay') or {})
    if any(user_overlay.get(k) for k in _WEIGHT_SOURCES):
        overlay['custom_load'] = True
    if not overlay:
        return kwargs
    overlay.update(user_overlay)
    return dict(kwargs, pretrained_cfg_overlay=overlay)
