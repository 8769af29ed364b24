""" The torch ``Dataset`` classes behind ``create_dataset``: image + label, image + mask, and their collate.

Apart from ``datasets.py`` (the named datasets) so that ``seg_folder.py`` can subclass
``SegmentationDataset`` while ``datasets.py`` imports ``seg_folder.py``: no import cycle.
"""
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.utils.data

from . import readers

__all__ = ['ImageClassificationDataset', 'SegmentationDataset', 'segmentation_collate', 'VOC_IGNORE_INDEX']

VOC_IGNORE_INDEX = 255


def _is_albumentations(transform) -> bool:
    import albumentations as A
    return isinstance(transform, (A.BaseCompose, A.BasicTransform))


class _TransformMixin:
    """Applies the transform and gives every DataLoader worker its own augmentation stream.

    Albumentations' ``Compose`` holds its own RNG; forked workers would inherit identical copies and
    augment in lock-step. Each worker reseeds it from torch's per-worker seed, so augmentation is also
    reproducible under ``torch.manual_seed``.
    """
    transform: Optional[Callable]
    _worker_seed: Optional[int] = None

    def _reseed_for_worker(self):
        info = torch.utils.data.get_worker_info()
        if info is not None and info.seed != self._worker_seed and hasattr(self.transform, 'set_random_seed'):
            self._worker_seed = info.seed
            self.transform.set_random_seed(info.seed % 2 ** 32)

    def _transform(self, image: np.ndarray, mask: Optional[np.ndarray] = None):
        if self.transform is None:
            return image, mask
        self._reseed_for_worker()
        if _is_albumentations(self.transform):
            out = self.transform(image=image) if mask is None else self.transform(image=image, mask=mask)
            return out['image'], out.get('mask')
        return (self.transform(image), None) if mask is None else self.transform(image, mask)


class ImageClassificationDataset(_TransformMixin, torch.utils.data.Dataset):
    """Images held in memory as uint8 ``(N, H, W, C)`` (or a list of ``(H, W, C)``) with int labels.

    Attributes: ``name``, ``split``, ``classes``, ``num_classes``, ``targets`` (int64 numpy array of all
    labels, no decoding), ``in_chans``, ``img_size`` ((H, W), None if sizes differ), ``task`` = 'cls'.
    """
    task = 'cls'
    source: Optional[str] = None  # imagefolder: the folder / tar the split was read from

    def __init__(
            self,
            images: Union[np.ndarray, Sequence[np.ndarray]],
            targets: Sequence[int],
            classes: Sequence[str],
            name: str = '',
            split: str = '',
            transform: Optional[Callable] = None,
    ):
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        if len(self.images) != len(self.targets):
            raise ValueError(f'{len(self.images)} images but {len(self.targets)} targets')
        self.classes = list(classes)
        if len(self.targets) and not 0 <= self.targets.min() <= self.targets.max() < len(self.classes):
            raise ValueError(f'labels span [{self.targets.min()}, {self.targets.max()}] '
                             f'but there are {len(self.classes)} classes')
        self.name, self.split, self.transform = name, split, transform
        first = self.images[0] if len(self.images) else None
        self.in_chans = first.shape[-1] if first is not None else None
        if isinstance(self.images, np.ndarray):
            self.img_size = tuple(self.images.shape[1:3])
        else:
            sizes = {im.shape[:2] for im in self.images}
            self.img_size = sizes.pop() if len(sizes) == 1 else None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: Sequence[int]) -> 'ImageClassificationDataset':
        """A dataset of the given samples (sharing memory when the images are one array)."""
        indices = np.asarray(indices, dtype=np.int64)
        images = self.images[indices] if isinstance(self.images, np.ndarray) else [self.images[i] for i in indices]
        out = ImageClassificationDataset(images, self.targets[indices], self.classes, self.name, self.split,
                                         self.transform)
        out.source = self.source
        return out

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        image, _ = self._transform(self.images[index])
        return image, int(self.targets[index])

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(name={self.name!r}, split={self.split!r}, samples={len(self)}, '
                f'classes={self.num_classes}, img_size={self.img_size}, in_chans={self.in_chans})')


class SegmentationDataset(_TransformMixin, torch.utils.data.Dataset):
    """Image + mask files decoded per item (RGB image, palette / grey mask of class ids).

    Attributes: ``name``, ``split``, ``classes``, ``num_classes``, ``in_chans`` = 3, ``ignore_index``
    (255: VOC's object borders and 'difficult' pixels), ``task`` = 'seg', ``images``/``masks`` (paths).
    """
    task = 'seg'
    in_chans = 3

    def __init__(
            self,
            images: Sequence[str],
            masks: Sequence[str],
            classes: Sequence[str],
            name: str = '',
            split: str = '',
            transform: Optional[Callable] = None,
            ignore_index: int = VOC_IGNORE_INDEX,
    ):
        if len(images) != len(masks):
            raise ValueError(f'{len(images)} images but {len(masks)} masks')
        self.images, self.masks = list(images), list(masks)
        self.classes = list(classes)
        self.name, self.split, self.transform, self.ignore_index = name, split, transform, ignore_index

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """The raw uint8 image (H, W, 3) and mask (H, W) of one sample."""
        image = readers.decode_image(self.images[index], self.images[index], mode='RGB')
        # masks hold class ids (palette or grey PNG); np.array makes a writable copy, ToTensorV2 shares it
        mask = readers.decode_image(self.masks[index], self.masks[index], modes=('P', 'L'))
        if image.shape[:2] != mask.shape:
            raise readers.DataFileError(f'image {self.images[index]} is {image.shape[:2]} but its mask is {mask.shape}')
        bad = (mask >= self.num_classes) & (mask != self.ignore_index)
        if bad.any():  # a class id the model has no output for: a wrong loss or a device-side assert later
            raise readers.DataFileError(
                f'{self.masks[index]}: mask values {np.unique(mask[bad])[:10].tolist()} are neither a class id '
                f'(0..{self.num_classes - 1}) nor the ignore index {self.ignore_index}')
        return image, mask

    def __getitem__(self, index: int):
        image, mask = self._transform(*self.load(index))
        if isinstance(mask, torch.Tensor):
            mask = mask.long()
        return image, mask

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name={self.name!r}, split={self.split!r}, samples={len(self)}, classes={self.num_classes})'


def segmentation_collate(batch, ignore_index: int = VOC_IGNORE_INDEX):
    """Batch whole (differently sized) segmentation samples: pad bottom/right to the largest size, images
    with 0 (the mean after normalisation), masks with ``ignore_index`` so padding is never scored.

    Use as ``DataLoader(val_set, batch_size=8, collate_fn=segmentation_collate)``; batch size 1 needs none.
    The padding does reach the predictions of nearby pixels; evaluate with batch size 1 to match a
    per-image evaluation exactly.
    """
    images, masks = zip(*batch)
    height = max(im.shape[-2] for im in images)
    width = max(im.shape[-1] for im in images)
    out_images = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    out_masks = torch.full((len(masks), height, width), ignore_index, dtype=torch.int64)
    for i, (im, m) in enumerate(zip(images, masks)):
        out_images[i, :, :im.shape[-2], :im.shape[-1]] = im
        out_masks[i, :m.shape[-2], :m.shape[-1]] = torch.as_tensor(m)
    return out_images, out_masks
