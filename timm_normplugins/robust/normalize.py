""" Attack in pixel space: the model with its input normalisation in front of it.

torchattacks attacks models that take pixels in [0, 1] and clamps every iterate to [0, 1] without
checking the input range, so feeding it normalised tensors corrupts them silently. The papers' models
take ``(pixel·255 − (122, 117, 104)) / 256``; ``PixelSpaceModel`` puts exactly that in front of the
model so attacks see pixels.

ε conventions: the FDT/TN paper states ε in the normalised units the network sees. One normalised
unit is ``std`` pixel units ([0, 1] scale), i.e. 256/255 for the papers' models, so
``ε_pixel = ε_normalised · 256/255`` (``eps_to_pixels``). AutoAttack/RobustBench's 8/255 is already
in pixel units.
"""
import math
from typing import List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn

__all__ = ['PixelSpaceModel', 'pixel_space_model', 'resolve_mean_std', 'check_mean_std', 'check_finite_model',
           'non_finite_tensors', 'eps_to_pixels', 'pixel_transform', 'EPS_UNITS', 'PIXEL_DTYPES']

EPS_UNITS = ('normalized', 'pixel')

# Images are 8-bit: computing (x·255 − mean·255) / (std·255) maps every clean [0, 1] pixel p/255 to
# the bit-identical float32 value Albumentations' Normalize(max_pixel_value=255) gave in training.
_PIXEL_MAX = 255.0


def resolve_mean_std(
        model: nn.Module,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """The (mean, std) in timm's [0, 1] units: given ones, else the model's pretrained cfg."""
    if mean is None or std is None:
        cfg = timm.data.resolve_data_config({}, model=model)
        mean = cfg['mean'] if mean is None else mean
        std = cfg['std'] if std is None else std
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    check_mean_std(mean, std)
    return mean, std


def check_mean_std(mean: Sequence[float], std: Sequence[float]) -> None:
    """One finite mean and one finite std > 0 per channel; else ``ValueError``.

    A std of 0 (or nan) makes every normalised input inf/nan: the model then predicts one class, the
    attacks find no gradient, and the report shows chance accuracy at every ε as if it were a result.
    """
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != len(std):
        raise ValueError(f'mean and std must have one value per channel, got {len(mean)} and {len(std)}')
    if not all(math.isfinite(m) for m in mean):
        raise ValueError(f'mean must be finite, got {mean}')
    if not all(math.isfinite(s) and s > 0 for s in std):
        raise ValueError(f'std must be finite and positive, got {std}')


def non_finite_tensors(model: nn.Module) -> List[str]:
    """Names of the floating-point parameters and buffers of ``model`` holding a nan or inf."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [name for name, t in tensors
            if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t.detach()).all())]


def check_finite_model(model: nn.Module, what: str = 'the model') -> None:
    """``ValueError`` naming the first non-finite parameter/buffer: such a model scores chance, not a result."""
    bad = non_finite_tensors(model)
    if bad:
        raise ValueError(f'{what} has non-finite (nan/inf) weights in {len(bad)} tensor(s), e.g. {bad[0]!r}; '
                         'its accuracy would be meaningless')


class PixelSpaceModel(nn.Module):
    """``model((x − mean) / std)`` for pixel inputs ``x`` in [0, 1] (timm's mean/std units)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        mean, std = tuple(mean), tuple(std)
        check_mean_std(mean, std)
        # float64 products, then float32: 122/255·255 → exactly 122.0, 256/255·255 → exactly 256.0
        shape = (1, len(mean), 1, 1)
        self.register_buffer('mean_px', torch.tensor(mean, dtype=torch.float64).mul(_PIXEL_MAX).float().view(shape))
        self.register_buffer('std_px', torch.tensor(std, dtype=torch.float64).mul(_PIXEL_MAX).float().view(shape))
        self.mean, self.std = mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.mean_px.shape[1]:
            raise ValueError(f'input has {x.shape[1]} channels, the normalisation {self.mean_px.shape[1]}')
        return (x * _PIXEL_MAX - self.mean_px) / self.std_px

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))

    def extra_repr(self) -> str:
        return f'mean={self.mean}, std={self.std}'


def pixel_space_model(
        model: nn.Module,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
) -> PixelSpaceModel:
    """Wrap ``model`` so it takes [0, 1] pixels; mean/std default to the model's pretrained cfg.

    For a ``save_model`` checkpoint pass ``read_checkpoint_info(path)['data_config']``'s mean/std.
    """
    if isinstance(model, PixelSpaceModel):
        return model
    mean, std = resolve_mean_std(model, mean, std)
    return PixelSpaceModel(model, mean, std)


def eps_to_pixels(eps: float, std: Sequence[float], units: str = 'normalized') -> float:
    """ε (or a step size) in [0, 1] pixel units.

    ``units='normalized'``: ε is measured in the model's normalised input (the FDT/TN paper's
    convention), so it is multiplied by ``std`` (256/255 for the papers' models). This needs the
    same std on every channel, otherwise an ε-ball in normalised space is not an L∞/L2 ball in pixel
    space. ``units='pixel'``: ε is already in [0, 1] pixel units (e.g. AutoAttack's 8/255).
    """
    if units not in EPS_UNITS:
        raise ValueError(f'ε units must be one of {EPS_UNITS}, got {units!r}')
    if eps < 0:
        raise ValueError(f'ε must be non-negative, got {eps}')
    if units == 'pixel':
        return float(eps)
    std = tuple(float(s) for s in std)
    if max(std) - min(std) > 1e-12 * max(std):
        raise ValueError(
            f'ε in normalised units needs the same std on every channel (got {std}); '
            "give ε in pixel units (eps_units='pixel') instead")
    return float(eps) * std[0]


PIXEL_DTYPES = ('float', 'uint8')


def pixel_transform(transform, dtype: str = 'float'):
    """An Albumentations pipeline (e.g. ``create_transform(name, train=False)``) giving pixels instead of
    normalised inputs: its ``Normalize`` is replaced by ``ToFloat(max_value=255)``.

    Everything else (resizes, crops, ``ToTensorV2``) is kept, so the images are the ones the evaluation
    pipeline produces, as float32 pixels in [0, 1] -- what torchattacks' attacks take (they refuse uint8)
    -- equal to ``uint8 / 255`` in float32; ``PixelSpaceModel`` then applies the normalisation bit-exactly.
    ``dtype='uint8'`` keeps the 0-255 integers (4x less memory; ``evaluate_robustness`` takes both).
    """
    import albumentations as A
    if dtype not in PIXEL_DTYPES:
        raise ValueError(f'dtype must be one of {PIXEL_DTYPES}, got {dtype!r}')
    if not isinstance(transform, A.BaseCompose):
        raise TypeError(f'expected an Albumentations Compose, got {type(transform).__name__}')
    steps = list(transform.transforms)
    normalize = [i for i, t in enumerate(steps) if isinstance(t, A.Normalize)]
    if not normalize:
        raise ValueError('the pipeline has no Normalize step to remove; is it already a pixel pipeline?')
    for i in reversed(normalize):
        del steps[i]
    if dtype == 'float':
        # where Normalize was: before ToTensorV2, so the division happens on the uint8 array in float32
        steps.insert(normalize[0], A.ToFloat(max_value=255.0))
    return A.Compose(steps)
