""" The options of Full Distribution Training, shared by the batch mixer (``FDTMixup``) and the dataset
wrapper (``FDTDataset``): defined and validated once here, read by both as attributes.
"""
import numbers
from dataclasses import dataclass
from typing import Optional

__all__ = ['FDTOptions', 'FDT_WEIGHTS', 'FDT_LABELS']

FDT_WEIGHTS = ('harmonic', 'uniform', 'dirichlet')
FDT_LABELS = ('soft', 'hard')


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclass(frozen=True)
class FDTOptions:
    """What one FDT sample is: how many images (``min_images``..min(C, ``max_images``)), their weights, the label.

    Args:
        num_classes: C.
        prob: probability that a sample is mixed at all.
        weights: ``'harmonic'`` (eq. 2), ``'uniform'`` or ``'dirichlet'``.
        label: ``'soft'`` (FDT) or ``'hard'`` (the OV ablation).
        label_smoothing: smoothing of the soft target, in [0, 1).
        max_images: cap on the images per sample (None: one per class).
        min_images: the fewest images per sample.
    """
    num_classes: int = 1000
    prob: float = 1.0
    weights: str = 'harmonic'
    label: str = 'soft'
    label_smoothing: float = 0.0
    max_images: Optional[int] = None
    min_images: int = 1

    def __post_init__(self):
        if not _is_int(self.num_classes) or self.num_classes < 1:
            raise ValueError(f'num_classes must be a positive int, got {self.num_classes!r}')
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f'prob must lie in [0, 1], got {self.prob}')
        if self.weights not in FDT_WEIGHTS:
            raise ValueError(f'weights must be one of {FDT_WEIGHTS}, got {self.weights!r}')
        if self.label not in FDT_LABELS:
            raise ValueError(f"label must be 'soft' (FDT) or 'hard' (the OV ablation), got {self.label!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f'label_smoothing must lie in [0, 1), got {self.label_smoothing}')
        if self.max_images is not None and (not _is_int(self.max_images) or self.max_images < 1):
            raise ValueError(f'max_images must be an int >= 1 (or None for no limit), got {self.max_images!r}')
        if not _is_int(self.min_images) or self.min_images < 1:
            raise ValueError(f'min_images must be an int >= 1, got {self.min_images!r}')
        if self.min_images > self.n_max:
            raise ValueError(f'min_images={self.min_images} exceeds the largest count of images, min(num_classes, '
                             f'max_images) = {self.n_max}')
        # plain Python numbers (a numpy int or a 0-d tensor would leak into hashing and device code)
        for name, cast in (('num_classes', int), ('prob', float), ('label_smoothing', float), ('min_images', int)):
            object.__setattr__(self, name, cast(getattr(self, name)))
        if self.max_images is not None:
            object.__setattr__(self, 'max_images', int(self.max_images))

    @property
    def n_max(self) -> int:
        """The most images one sample superimposes: one per class, capped by max_images."""
        return min(self.num_classes, self.max_images or self.num_classes)


class FDTOptionsAttributes:
    """``mixer.num_classes``, ``mixer.mix_prob``, ... read from ``self.options`` (one source, read-only)."""
    options: FDTOptions

    num_classes = property(lambda self: self.options.num_classes)
    mix_prob = property(lambda self: self.options.prob)
    weights = property(lambda self: self.options.weights)
    label = property(lambda self: self.options.label)
    label_smoothing = property(lambda self: self.options.label_smoothing)
    max_images = property(lambda self: self.options.max_images)
    min_images = property(lambda self: self.options.min_images)
    n_max = property(lambda self: self.options.n_max)
