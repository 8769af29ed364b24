""" The papers' augmentation pipelines as Albumentations ``Compose`` objects.

TN/FDT paper (CIFAR-10/100, Fashion-MNIST, SVHN) and WC/GC paper (VOC2012, model d):

* CIFAR-10/100, Fashion-MNIST train: zero-pad 4 px, random 32x32 (28x28) crop, horizontal flip.
* SVHN: no augmentation.
* digits (scikit-learn's, upscaled to 32x32): zero-pad 4 px + random crop only -- a mirrored digit is
  another symbol.
* imagefolder train: the CIFAR pipeline at the images' own size.
* VOC2012 train: random 227x227 crop (padded where the image is smaller: image with the mean colour,
  i.e. zero after normalisation, mask with the ignore index 255), horizontal flip, random colour offset,
  all applied jointly to image and mask; eval: the whole image.
* segfolder (any image + mask folder): VOC's pipeline at the folder's ``img_size`` (default 227),
  padding masks with its ignore index.
* All: ``(pixel - (122, 117, 104)) / 256``, grey images ``(pixel - 117) / 256``; exactly what timm's
  ``resolve_data_config`` reads from the models' default cfgs.

Every pipeline ends with ``ToTensorV2``; prepend or insert any other Albumentations transform as usual.
"""
from typing import Any, Optional, Sequence, Tuple, Union

import albumentations as A
import cv2
import numpy as np
from albumentations.core.transforms_interface import BaseTransformInitSchema
from albumentations.pytorch import ToTensorV2
from pydantic import Field

from ..core.paper_norm import PAPER_MEAN_PIXELS, paper_mean_std
from .datasets import VOC_CROP, VOC_IGNORE_INDEX, canonical_dataset_name, dataset_info

__all__ = ['create_transform', 'RandomColorOffset', 'PAD_PIXELS']

PAD_PIXELS = 4  # "shifting by up to 4 pixels in each direction (padding with zeros)"

# dlib's apply_random_color_offset (the WC/GC authors trained with dlib): the PCA colour augmentation of
# Krizhevsky et al. 2012 with a fixed basis. Columns: RGB eigenvectors of natural images scaled by the
# square roots of their eigenvalues, in pixel units.
_DLIB_COLOR_BASIS = np.array([
    [-66.379, 25.094, 6.79698],
    [-68.0492, -0.302309, -13.9539],
    [-68.4907, -24.0199, 7.27653],
])


class RandomColorOffset(A.ImageOnlyTransform):
    """Add one random RGB offset to every pixel (dlib's ``apply_random_color_offset``).

    offset = round(scale * B @ z), z ~ N(0, I_3), B the fixed PCA basis of natural-image colours above;
    the result is clipped to the valid range. With ``scale=0.1`` (dlib's) each channel's offset has a
    standard deviation of about 7 grey levels, mostly a shared brightness shift.

    Args:
        scale: multiplier of the sampled offset (0 disables the transform).
        p: probability of applying it.

    Targets: image (uint8 in [0, 255] or float32 in [0, 1]); 3 channels.
    """

    class InitSchema(BaseTransformInitSchema):
        scale: float = Field(ge=0)

    def __init__(self, scale: float = 0.1, p: float = 1.0):
        super().__init__(p=p)
        self.scale = scale

    def get_params(self) -> dict:
        z = self.random_generator.standard_normal(3)
        return {'offset': np.round(self.scale * _DLIB_COLOR_BASIS @ z)}

    def apply(self, img: np.ndarray, offset: np.ndarray, **params: Any) -> np.ndarray:
        if img.shape[-1] != 3:
            raise ValueError(f'RandomColorOffset needs RGB images, got {img.shape[-1]} channel(s)')
        if img.dtype == np.uint8:
            # one lookup table per channel, as dlib does
            lut = np.clip(np.arange(256)[:, None] + offset[None, :], 0, 255).astype(np.uint8)
            return np.stack([lut[img[..., c], c] for c in range(3)], axis=-1)
        return np.clip(img + (offset / 255.0).astype(img.dtype), 0.0, 1.0)

    def get_transform_init_args_names(self) -> Tuple[str, ...]:
        return ('scale',)


def _normalize(in_chans: int) -> list:
    mean, std = paper_mean_std(in_chans)
    return [A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2()]


def _shift(size: Tuple[int, int]) -> list:
    return [A.Pad(padding=PAD_PIXELS, fill=0, border_mode=cv2.BORDER_CONSTANT), A.RandomCrop(*size)]


def create_transform(
        dataset: Union[str, Any],
        train: bool,
        img_size: Optional[Union[int, Sequence[int]]] = None,
        in_chans: Optional[int] = None,
        seed: Optional[int] = None,
) -> A.Compose:
    """The paper's pipeline for ``dataset`` (a name, or a dataset from ``create_dataset``).

    Args:
        dataset: dataset name ('cifar10', 'cifar100', 'fashion_mnist', 'svhn', 'voc2012', 'digits',
            'imagefolder', 'segfolder') or a dataset object carrying ``name`` (and, for imagefolder,
            ``img_size`` / ``in_chans``; for segfolder ``img_size`` and ``ignore_index``).
        train: the training pipeline (augmentation) or the evaluation one (normalisation only).
        img_size: crop size (H, W) or an int; defaults to the dataset's image size (VOC: 227).
            An imagefolder training pipeline needs it when the images' size is not known.
        in_chans: imagefolder only, 1 or 3 (default: the dataset's, else 3).
        seed: seed of the Compose's own RNG (None: random). DataLoader workers of our datasets reseed it
            from torch's worker seed anyway.

    Returns:
        ``A.Compose`` ending in ``ToTensorV2``: images come out float32 ``(C, H, W)``.
    """
    name = canonical_dataset_name(dataset if isinstance(dataset, str) else getattr(dataset, 'name', ''))
    ignore_index = getattr(dataset, 'ignore_index', None)
    if ignore_index is None:
        ignore_index = VOC_IGNORE_INDEX
    if name == 'segfolder':
        if in_chans not in (None, 3):
            raise ValueError(f'segfolder images are RGB, got in_chans={in_chans}')
        chans, size = 3, img_size or getattr(dataset, 'img_size', None) or (VOC_CROP, VOC_CROP)
    elif name == 'imagefolder':
        chans = in_chans or getattr(dataset, 'in_chans', None) or 3
        size = img_size or getattr(dataset, 'img_size', None)
    else:
        info = dataset_info(name)
        if in_chans is not None and in_chans != info.in_chans:
            raise ValueError(f'{name} has {info.in_chans} channel(s), got in_chans={in_chans}')
        chans, size = info.in_chans, img_size or info.img_size
    if isinstance(size, int):
        size = (size, size)

    if not train:
        augment = []
    elif name in ('voc2012', 'segfolder'):
        augment = [
            A.RandomCrop(*size, pad_if_needed=True, pad_position='random', border_mode=cv2.BORDER_CONSTANT,
                         fill=PAPER_MEAN_PIXELS, fill_mask=ignore_index),
            A.HorizontalFlip(p=0.5),
            RandomColorOffset(p=1.0),
        ]
    elif name == 'svhn':
        augment = []
    elif size is None:
        raise ValueError('an imagefolder training pipeline needs the crop size: pass img_size= or a dataset '
                         'whose images share one size')
    elif name == 'digits':
        augment = _shift(size)
    else:
        augment = _shift(size) + [A.HorizontalFlip(p=0.5)]
    return A.Compose(augment + _normalize(chans), seed=seed)
