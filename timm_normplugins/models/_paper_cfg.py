""" Default pretrained cfg shared by the papers' models.

Both Fuhl & Kasneci papers feed ``(pixel - (122, 117, 104)) / 256`` to their networks. In timm's
units (pixels scaled to [0, 1] first) that is ``mean = (122, 117, 104) / 255`` and ``std = 256 / 255``,
so ``timm.data.resolve_data_config(model=...)`` reproduces the papers' normalisation exactly.

Grey (1-channel) inputs such as Fashion-MNIST use the BT.601 luma of that RGB mean, 117
(0.299*122 + 0.587*117 + 0.114*104 = 117.01), and the same divisor 256.
"""
import functools
from typing import Any, Dict

__all__ = ['PAPER_MEAN_PIXELS', 'PAPER_GREY_MEAN_PIXELS', 'PAPER_STD_PIXELS', 'PAPER_MEAN', 'PAPER_STD',
           'paper_mean_std', 'paper_cfg', 'plugin_cfg_overlay']

PAPER_MEAN_PIXELS = (122.0, 117.0, 104.0)
PAPER_GREY_MEAN_PIXELS = (117.0,)
PAPER_STD_PIXELS = 256.0

PAPER_MEAN = tuple(m / 255.0 for m in PAPER_MEAN_PIXELS)
PAPER_STD = (PAPER_STD_PIXELS / 255.0,) * 3


def paper_mean_std(in_chans: int = 3):
    """(mean, std) in timm's [0, 1] units for 3-channel or 1-channel inputs."""
    if in_chans == 3:
        return PAPER_MEAN, PAPER_STD
    if in_chans == 1:
        return (PAPER_GREY_MEAN_PIXELS[0] / 255.0,), (PAPER_STD_PIXELS / 255.0,)
    raise ValueError(f'the papers define a normalisation for 1 or 3 input channels, got in_chans={in_chans}')


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
    * a weight file/url: load it through the model's own strict, explained loader
      (``checkpoint.CheckedLoadMixin``) instead of timm's, which silently drops the classifier and
      loads non-strictly whenever ``num_classes`` differs from the cfg.
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


_RUNTIME_KWARGS = ('pretrained_cfg', 'pretrained_cfg_overlay', 'cache_dir', 'device', 'dtype', 'features_only',
                   'out_indices', 'feature_cls', 'feature_cfg', 'pretrained_model_args')


def records_creation_args(fn):
    """Make a model entrypoint record its creation args on the model (as ``_model_args``).

    timm >= 1.0.31's ``create_model`` records them itself (and ``save_model`` reads them back through
    ``timm.models.get_model_args``); older timm does not, so a checkpoint would lose e.g. ``tn_grad`` or
    ``stem``. Goes under ``@register_model``.
    """
    @functools.wraps(fn)
    def entrypoint(pretrained: bool = False, **kwargs):
        model = fn(pretrained=pretrained, **kwargs)
        if not hasattr(model, '_model_args'):
            model._model_args = {k: v for k, v in kwargs.items() if k not in _RUNTIME_KWARGS}
        return model
    return entrypoint
