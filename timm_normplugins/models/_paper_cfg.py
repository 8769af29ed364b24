""" Default pretrained cfg shared by the papers' models.

The cfg carries the papers' normalisation (``core/paper_norm.py``), so
``timm.data.resolve_data_config(model=...)`` reproduces it exactly.
"""
from typing import Any, Dict, Optional

from timm.models import resolve_pretrained_cfg

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


def _adapt_mean_std(cfg: Dict[str, Any], in_chans: int):
    """A weighted cfg's mean/std for another channel count: repeated from one channel, averaged down to one (as
    timm's ``adapt_input_conv`` repeats or sums the first conv); a paper cfg gets the papers' own values."""
    mean, std = tuple(cfg.get('mean') or ()), tuple(cfg.get('std') or ())
    if not (cfg.get('file') or cfg.get('url')) or len(mean) not in (1, 3) or len(mean) != len(std):
        return paper_mean_std(in_chans)
    if len(mean) == 1:
        return mean * in_chans, std * in_chans
    if in_chans == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    return paper_mean_std(in_chans)


def plugin_cfg_overlay(kwargs: Dict[str, Any], img_size=(32, 32), variant: Optional[str] = None) -> Dict[str, Any]:
    """Adjust the pretrained cfg overlay of a model-creation call (the caller's keys win).

    * ``in_chans`` other than the cfg's: the cfg describes that many channels (the papers' grey mean for a
      1-channel paper cfg; a pretrained tag's mean repeated or averaged), at the cfg's input size.
      ``variant`` (with the call's ``pretrained_cfg``, e.g. a tag) names the cfg; without it, a 3-channel
      cfg of ``img_size``.
    * a weight file/url: load it through the model's own loader (``checkpoint.CheckedLoadMixin``), which
      keeps timm's semantics (classifier dropped on another class count, first conv adapted to ``in_chans``)
      but decides from the file's shapes, not the cfg's class count, and refuses any other mismatch.
    """
    overlay = {}
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get('pretrained_cfg')).to_dict() if variant else {}
    base_size = tuple(cfg.get('input_size') or (3, *img_size))
    in_chans = kwargs.get('in_chans', base_size[0])
    if in_chans != base_size[0]:
        mean, std = _adapt_mean_std(cfg, in_chans)
        overlay.update(mean=mean, std=std, input_size=(in_chans, *base_size[1:]))
    user_overlay = dict(kwargs.get('pretrained_cfg_overlay') or {})
    if any(user_overlay.get(k) for k in _WEIGHT_SOURCES):
        overlay['custom_load'] = True
    if not overlay:
        return kwargs
    overlay.update(user_overlay)
    return dict(kwargs, pretrained_cfg_overlay=overlay)
