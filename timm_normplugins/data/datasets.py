""" The papers' datasets as in-memory torch datasets: ``create_dataset`` and ``dataset_info``.

Classification datasets (cifar10, cifar100, fashion_mnist, svhn, digits, imagefolder) decode their split
once into a uint8 array, so an epoch never re-decodes an image. The segmentation datasets (voc2012, ~1 GB
decoded per split, and segfolder: any image + mask folder, see ``seg_folder.py``) are read per item.

Items: ``(image, label)`` / ``(image, mask)`` after the transform. An Albumentations transform gets
``image=`` (and ``mask=``) and its ``'image'`` (``'mask'``) output is returned; any other callable gets
the image (and the mask) positionally. Without a transform the raw arrays come back: the image uint8
``(H, W, C)`` (C = 1 for grey), the mask uint8 ``(H, W)``. A mask that is a tensor after the transform is
returned as int64, ready for ``cross_entropy(..., ignore_index=255)``.
"""
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.utils.data

from ..core.paper_norm import paper_mean_std
from . import readers
from .readers import DatasetNotFoundError, balanced_subset

__all__ = [
    'DATASET_NAMES', 'DatasetInfo', 'DatasetNotFoundError', 'ImageClassificationDataset', 'SegmentationDataset',
    'create_dataset', 'dataset_info', 'canonical_dataset_name', 'segmentation_collate',
]

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
CIFAR100_CLASSES = (
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle', 'bottle', 'bowl',
    'boy', 'bridge', 'bus', 'butterfly', 'camel', 'can', 'castle', 'caterpillar', 'cattle', 'chair',
    'chimpanzee', 'clock', 'cloud', 'cockroach', 'couch', 'crab', 'crocodile', 'cup', 'dinosaur', 'dolphin',
    'elephant', 'flatfish', 'forest', 'fox', 'girl', 'hamster', 'house', 'kangaroo', 'keyboard', 'lamp',
    'lawn_mower', 'leopard', 'lion', 'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain',
    'mouse', 'mushroom', 'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree', 'pear', 'pickup_truck',
    'pine_tree', 'plain', 'plate', 'poppy', 'porcupine', 'possum', 'rabbit', 'raccoon', 'ray', 'road', 'rocket',
    'rose', 'sea', 'seal', 'shark', 'shrew', 'skunk', 'skyscraper', 'snail', 'snake', 'spider', 'squirrel',
    'streetcar', 'sunflower', 'sweet_pepper', 'table', 'tank', 'telephone', 'television', 'tiger', 'tractor',
    'train', 'trout', 'tulip', 'turtle', 'wardrobe', 'whale', 'willow_tree', 'wolf', 'woman', 'worm')
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker',
                         'Bag', 'Ankle boot')
VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
               'train', 'tvmonitor')
DIGIT_CLASSES = tuple(str(i) for i in range(10))
VOC_IGNORE_INDEX = 255
VOC_CROP = 227  # the WC/GC paper's training crop, also the U-Net's default input size

# name -> (task, classes, in_chans, img_size, splits)
_DATASETS = {
    'cifar10': ('cls', CIFAR10_CLASSES, 3, (32, 32), ('train', 'test')),
    'cifar100': ('cls', CIFAR100_CLASSES, 3, (32, 32), ('train', 'test')),
    'fashion_mnist': ('cls', FASHION_MNIST_CLASSES, 1, (28, 28), ('train', 'test')),
    'svhn': ('cls', DIGIT_CLASSES, 3, (32, 32), ('train', 'test', 'extra')),
    'digits': ('cls', DIGIT_CLASSES, 3, (readers.DIGITS_SIZE,) * 2, ('train', 'test')),
    'voc2012': ('seg', VOC_CLASSES, 3, (VOC_CROP, VOC_CROP), ('train', 'val', 'trainval')),
    'imagefolder': ('cls', None, 3, None, None),
    'segfolder': ('seg', None, 3, None, None),
}
DATASET_NAMES = tuple(_DATASETS)
_ALIASES = {'fmnist': 'fashion_mnist', 'voc': 'voc2012', 'folder': 'imagefolder', 'segmentationfolder': 'segfolder'}
_SPLIT_ALIASES = {'training': 'train', 'testing': 'test', 'valid': 'val', 'validation': 'val'}


def canonical_dataset_name(name: str) -> str:
    """``'CIFAR-10'``, ``'fashion-mnist'``, ``'fmnist'``, ``'voc'``, ``'image_folder'`` ... -> the registry name."""
    key = name.lower().replace('-', '').replace('_', '')  # spelling variants compare equal
    known = {n.replace('_', ''): n for n in DATASET_NAMES}
    known.update(_ALIASES)
    if key not in known:
        raise ValueError(f'unknown dataset {name!r}; known: {", ".join(DATASET_NAMES)}')
    return known[key]


def _canonical_split(name: str, split: str) -> str:
    split = _SPLIT_ALIASES.get(split.lower(), split.lower())
    splits = _DATASETS[name][4]
    if splits is None:  # imagefolder, segfolder: any folder / tar name
        return split
    if split not in splits:
        # these datasets have one held-out split; the papers report on it (calling it the validation set)
        held_out = 'val' if name == 'voc2012' else 'test'
        if split in ('val', 'test'):
            return held_out
        raise ValueError(f'{name} has splits {splits} (and "val"/"test" for the held-out one), got {split!r}')
    return split


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset before any file is read.

    ``mean``/``std`` are the papers' normalisation in timm's units (what ``create_transform`` applies).
    """
    name: str
    task: str  # 'cls' or 'seg'
    num_classes: int
    in_chans: int
    img_size: Optional[Tuple[int, int]]
    classes: Tuple[str, ...]
    mean: Tuple[float, ...] = field(repr=False, default=())
    std: Tuple[float, ...] = field(repr=False, default=())
    ignore_index: Optional[int] = None


def dataset_info(name: str, root: Optional[str] = None, split: str = 'train', in_chans: int = 3,
                 num_classes: Optional[int] = None, ignore_index: Optional[int] = None) -> DatasetInfo:
    """Classes, channels, image size and task of a dataset; reads no file except for the folder datasets.

    ``imagefolder`` needs ``root``: its classes are its folder names, its image size is its first image's
    (one image is decoded). ``segfolder`` needs ``root``: class count, ignore index and training crop come
    from ``num_classes`` / ``ignore_index`` or ``root/dataset.yaml``.
    """
    name = canonical_dataset_name(name)
    _check_folder_args(name, num_classes, ignore_index)
    task, classes, chans, img_size, _ = _DATASETS[name]
    ignore = VOC_IGNORE_INDEX if task == 'seg' else None
    if name == 'segfolder':
        if root is None:
            raise ValueError("dataset_info('segfolder') needs root= (its classes are in root/dataset.yaml)")
        from .seg_folder import read_seg_folder_config
        config = read_seg_folder_config(_expand(root), num_classes, ignore_index)
        classes, img_size, ignore = config.classes, config.img_size, config.ignore_index
    if name == 'imagefolder':
        if root is None:
            raise ValueError("dataset_info('imagefolder') needs root= (its classes are its folder names)")
        ds = create_dataset(name, root, split, in_chans=in_chans, max_samples=1)
        classes, chans, img_size = ds.classes, in_chans, ds.img_size
    mean, std = paper_mean_std(chans)
    return DatasetInfo(
        name=name, task=task, num_classes=len(classes), in_chans=chans, img_size=img_size, classes=tuple(classes),
        mean=mean, std=std, ignore_index=ignore)


def _check_folder_args(name: str, num_classes, ignore_index) -> None:
    if (num_classes is not None or ignore_index is not None) and name != 'segfolder':
        raise ValueError(f'num_classes / ignore_index are segfolder settings; {name} defines its own')


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
        return ImageClassificationDataset(images, self.targets[indices], self.classes, self.name, self.split, self.transform)

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
            raise ValueError(f'image {self.images[index]} is {image.shape[:2]} but its mask is {mask.shape}')
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


def _expand(root) -> Optional[str]:
    return None if root is None else os.path.expanduser(str(root))


def create_dataset(
        name: str,
        root: Optional[str] = None,
        split: str = 'train',
        download: bool = False,
        transform: Optional[Callable] = None,
        max_samples: Optional[int] = None,
        in_chans: Optional[int] = None,
        num_classes: Optional[int] = None,
        ignore_index: Optional[int] = None,
):
    """Build one split of a dataset.

    Args:
        name: cifar10, cifar100, fashion_mnist, svhn, voc2012, digits, imagefolder or segfolder (aliases
            such as 'CIFAR-10', 'fmnist', 'voc', 'seg_folder' are accepted).
        root: folder holding the files (``~`` is expanded); not needed for digits. For imagefolder a folder
            of class folders or a ``.tar`` of them; a folder holding ``<split>.tar`` or ``<split>/`` picks
            that split. For segfolder a folder of images and masks (layout: ``seg_folder.py``).
        split: 'train' / 'test' ('val' and 'validation' name the test split of datasets that have no
            separate validation split); voc2012: 'train' / 'val' ('test' = 'val') / 'trainval';
            svhn also 'extra'.
        download: fetch the files with torchvision if they are missing (not for digits / imagefolder).
        transform: an Albumentations transform (see ``create_transform``) or any callable; None returns
            the raw uint8 arrays.
        max_samples: keep a deterministic subset of this size (class-balanced for classification, the
            first ones for segmentation), e.g. for CPU-sized runs.
        in_chans: imagefolder only: decode to 1 (grey) or 3 (RGB, default) channels.
        num_classes, ignore_index: segfolder only, instead of (or checked against) ``root/dataset.yaml``.

    Raises:
        DatasetNotFoundError: the files are not there; the message says where they are expected and how
            to get them.
    """
    name = canonical_dataset_name(name)
    split = _canonical_split(name, split)
    _check_folder_args(name, num_classes, ignore_index)
    if in_chans is not None and name != 'imagefolder' and in_chans != _DATASETS[name][2]:
        raise ValueError(f'{name} has {_DATASETS[name][2]} channel(s); in_chans is only selectable for imagefolder')
    if name != 'digits' and root is None:
        raise ValueError(f'create_dataset({name!r}) needs root= (the folder holding or receiving its files)')
    root = _expand(root)
    if download and name in ('digits', 'imagefolder', 'segfolder'):
        raise ValueError(f'{name} cannot be downloaded ({"it ships with scikit-learn" if name == "digits" else "it is your folder"})')

    if name == 'segfolder':
        from .seg_folder import SegmentationFolderDataset, find_seg_folder, read_seg_folder_config
        config = read_seg_folder_config(root, num_classes, ignore_index)
        images, masks, split = find_seg_folder(root, split, config.mask_suffix)
        if max_samples is not None:
            images, masks = images[:max_samples], masks[:max_samples]
        ds = SegmentationFolderDataset(images, masks, config.classes, name, split, transform, config.ignore_index)
        ds.img_size = config.img_size  # the training crop (create_transform reads it)
        return ds

    if name == 'voc2012':
        images, masks = readers.find_voc2012(root, split, download)
        if max_samples is not None:
            images, masks = images[:max_samples], masks[:max_samples]
        return SegmentationDataset(images, masks, VOC_CLASSES, name, split, transform)

    if name in ('cifar10', 'cifar100'):
        arrays = readers.read_cifar(root, split, 10 if name == 'cifar10' else 100, download)
    elif name == 'fashion_mnist':
        arrays = readers.read_fashion_mnist(root, split, download)
    elif name == 'svhn':
        arrays = readers.read_svhn(root, split, download)
    elif name == 'digits':
        arrays = readers.read_digits(split)
    else:
        # subsets before decoding: only the kept images are read from the folder / tar
        return ImageClassificationDataset(
            *readers.read_image_folder(root, split, in_chans or 3, max_samples), name=name, split=split,
            transform=transform)
    ds = ImageClassificationDataset(*arrays, name=name, split=split, transform=transform)
    if max_samples is not None:
        ds = ds.subset(balanced_subset(ds.targets, max_samples))
    return ds
