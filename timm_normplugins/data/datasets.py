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
from typing import Callable, Optional, Tuple

from ..core.paper_norm import paper_mean_std
from . import readers
from .image_datasets import (  # noqa: F401  (re-exported)
    VOC_IGNORE_INDEX, ImageClassificationDataset, SegmentationDataset, segmentation_collate)
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


def dataset_task(name: str) -> str:
    """``'cls'`` or ``'seg'``: what a dataset's labels are, known from its name alone."""
    return _DATASETS[canonical_dataset_name(name)][0]


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
            of class folders or a ``.tar`` of them; a split tree (``train/``, ``val/`` or ``validation/``,
            ``test/``, folders or ``.tar``) gives each split its own folder, never a merge of them, and
            its classes are the training split's (other splits are mapped by class name; the folder used
            is ``ds.source``). For segfolder a folder of images and masks (layout: ``seg_folder.py``).
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
        ds = ImageClassificationDataset(
            *readers.read_image_folder(root, split, in_chans or 3, max_samples), name=name, split=split,
            transform=transform)
        ds.source = readers.resolve_image_folder(root, split)  # which folder / tar this split came from
        return ds
    ds = ImageClassificationDataset(*arrays, name=name, split=split, transform=transform)
    if max_samples is not None:
        ds = ds.subset(balanced_subset(ds.targets, max_samples))
    return ds
