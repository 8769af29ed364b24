""" ``segfolder``: any semantic-segmentation data set as a folder of images and masks paired by file name.

Layout (either form; split folder names as for ``imagefolder``: train/training, val/valid/validation,
test/testing)::

    ROOT/dataset.yaml                       ROOT/dataset.yaml
    ROOT/train/images/0001.jpg              ROOT/images/train/0001.jpg
    ROOT/train/masks/0001.png               ROOT/masks/train/0001.png     (or annotations/, labels/)
    ROOT/val/images/...                     ROOT/images/val/...

Images are raster files (JPEG, PNG, BMP, GIF, TIFF, WebP, PPM, TGA; decided by their bytes, never
PostScript) converted to RGB; masks are lossless single-channel files (PNG, BMP,
TIFF; palette, grey or 16-bit) holding one class id per pixel. An image and its mask share their path
below the split folder without the extension (``city/0001.jpg`` ↔ ``city/0001.png``); ``mask_suffix``
names an extra ending of the mask names (Cityscapes' ``_gtFine_labelIds``).

``ROOT/dataset.yaml`` (every key optional if given as an argument instead)::

    classes: [background, road, car]   # or num_classes: 3
    ignore_index: 255                  # label left out of loss and metrics (default 255)
    img_size: 512                      # training crop (default 227, the U-Net's input size)
    mask_suffix: _gtFine_labelIds      # default none

Files without a partner and mask values that are neither a class nor the ignore index are errors that
name the files.
"""
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from .image_datasets import SegmentationDataset
from .readers import DataFileError, DatasetNotFoundError, decode_image

__all__ = ['SEG_FOLDER_YAML', 'SegFolderConfig', 'SegmentationFolderDataset', 'read_seg_folder_config',
           'find_seg_folder']

SEG_FOLDER_YAML = 'dataset.yaml'
DEFAULT_IGNORE_INDEX = 255
DEFAULT_CROP = 227
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm')
MASK_EXTENSIONS = ('.png', '.bmp', '.tif', '.tiff')  # lossless: a JPEG would blur the class ids
_YAML_KEYS = ('classes', 'num_classes', 'ignore_index', 'img_size', 'mask_suffix')
_SPLIT_NAMES = {'train': ('train', 'training'), 'val': ('val', 'valid', 'validation'), 'test': ('test', 'testing')}
_MASK_DIRS = ('masks', 'annotations', 'labels')


@dataclass(frozen=True)
class SegFolderConfig:
    """Classes, ignore index, training crop size and mask-name suffix of a ``segfolder`` root."""
    classes: Tuple[str, ...]
    ignore_index: int
    img_size: Tuple[int, int]
    mask_suffix: str = ''

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_seg_folder_config(root: str, num_classes: Optional[int] = None,
                           ignore_index: Optional[int] = None) -> SegFolderConfig:
    """The arguments, else ``ROOT/dataset.yaml``, else the defaults; a class count is required."""
    path = os.path.join(root, SEG_FOLDER_YAML)
    raw: Dict[str, Any] = {}
    if os.path.isfile(path):
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
        if not isinstance(raw, dict):
            raise ValueError(f'{path}: expected a mapping with keys from {_YAML_KEYS}')
        unknown = sorted(set(raw) - set(_YAML_KEYS))
        if unknown:
            raise ValueError(f'{path}: unknown keys {unknown}; known: {list(_YAML_KEYS)}')
    elif not os.path.isdir(root):
        raise DatasetNotFoundError(f'segmentation folder not found: {root}')
    classes = raw.get('classes')
    count = raw.get('num_classes')
    if classes is not None and (not isinstance(classes, list) or not classes):
        raise ValueError(f'{path}: classes must be a non-empty list of names, got {classes!r}')
    if classes is not None and count is not None and count != len(classes):
        raise ValueError(f'{path}: num_classes={count} but {len(classes)} classes are listed')
    if num_classes is not None:
        if classes is not None and num_classes != len(classes):
            raise ValueError(f'num_classes={num_classes} but {path} lists {len(classes)} classes')
        count = num_classes
    if classes is None:
        if count is None:
            raise ValueError(f'segfolder needs its class count: pass num_classes= or write "num_classes: N" (or '
                             f'"classes: [name, ...]") into {path}')
        if not isinstance(count, int) or count < 1:
            raise ValueError(f'num_classes must be a positive integer, got {count!r}')
        classes = [str(i) for i in range(count)]
    ignore = ignore_index if ignore_index is not None else raw.get('ignore_index', DEFAULT_IGNORE_INDEX)
    if not isinstance(ignore, int) or 0 <= ignore < len(classes):
        raise ValueError(f'ignore_index must be an integer outside the class ids 0..{len(classes) - 1} '
                         f'(e.g. 255), got {ignore!r}')
    size = raw.get('img_size', DEFAULT_CROP)
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f'{path}: img_size must be an int or [height, width], got {raw.get("img_size")!r}')
    return SegFolderConfig(tuple(str(c) for c in classes), ignore, size, str(raw.get('mask_suffix') or ''))


def _split_dirs(root: str, split: str) -> Tuple[str, str, str]:
    """(images dir, masks dir, split name found); held-out splits stand in for each other ('test' ↔ 'val')."""
    held_out = {'test': ('test', 'val'), 'val': ('val', 'test')}.get(split, (split,))
    for wanted in held_out:
        for name in _SPLIT_NAMES.get(wanted, (wanted,)):
            for mask_dir in _MASK_DIRS:
                for images, masks in ((os.path.join(root, name, 'images'), os.path.join(root, name, mask_dir)),
                                      (os.path.join(root, 'images', name), os.path.join(root, mask_dir, name))):
                    if os.path.isdir(images) and os.path.isdir(masks):
                        return images, masks, wanted
    raise DatasetNotFoundError(
        f'segmentation folder ({split} split) not found. Expected {root}/{split}/images + {split}/masks or '
        f'{root}/images/{split} + masks/{split} (masks/ may also be annotations/ or labels/).')


def _files(folder: str, extensions: Sequence[str], suffix: str = '') -> Dict[str, str]:
    """Relative path without extension (and without ``suffix``) -> file path, for every file below ``folder``."""
    found: Dict[str, str] = {}
    for dirpath, _, names in os.walk(folder):
        for name in sorted(names):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in extensions:
                continue
            if suffix and stem.endswith(suffix):
                stem = stem[:-len(suffix)]
            key = os.path.relpath(os.path.join(dirpath, stem), folder)
            if key in found:
                raise ValueError(f'two files for {key!r} in {folder}: {found[key]} and {os.path.join(dirpath, name)}')
            found[key] = os.path.join(dirpath, name)
    return found


def find_seg_folder(root: str, split: str, mask_suffix: str = '') -> Tuple[List[str], List[str], str]:
    """Image and mask paths of a split, paired by name and sorted; and the split actually read."""
    image_dir, mask_dir, found_split = _split_dirs(root, split)
    images = _files(image_dir, IMAGE_EXTENSIONS)
    masks = _files(mask_dir, MASK_EXTENSIONS, mask_suffix)
    lossy = _files(mask_dir, ('.jpg', '.jpeg'))
    if lossy:
        raise ValueError(f'{len(lossy)} JPEG masks in {mask_dir} (e.g. {next(iter(lossy.values()))}): JPEG is lossy '
                         'and would corrupt the class ids; store masks as PNG')
    unpaired = [(f'{len(images.keys() - masks.keys())} images without a mask', sorted(images.keys() - masks.keys())),
                (f'{len(masks.keys() - images.keys())} masks without an image', sorted(masks.keys() - images.keys()))]
    problems = [f'{what} (e.g. {", ".join(names[:5])})' for what, names in unpaired if names]
    if problems:
        hint = f' with mask_suffix {mask_suffix!r}' if mask_suffix else ''
        raise ValueError(f'{root} ({found_split}): images and masks are paired by name{hint}; '
                         + '; '.join(problems))
    if not images:
        raise DatasetNotFoundError(f'segmentation folder ({found_split} split): no images in {image_dir}')
    keys = sorted(images)
    return [images[k] for k in keys], [masks[k] for k in keys], found_split


def check_mask_values(mask: np.ndarray, num_classes: int, ignore_index: int, path: str) -> None:
    """Every pixel is a class id or the ignore index."""
    bad = (mask >= num_classes) & (mask != ignore_index)
    if bad.any():
        values = np.unique(mask[bad])
        raise DataFileError(f'{path}: mask values {values[:10].tolist()} are neither a class id (0..{num_classes - 1}) '
                         f'nor the ignore index {ignore_index}')


class SegmentationFolderDataset(SegmentationDataset):
    """``SegmentationDataset`` whose masks may be 16-bit and are checked against the class count on reading."""
    _MASK_MODES = ('P', 'L', 'I;16', 'I')

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        # decode_image: raster formats only (no Ghostscript), a pixel limit, errors naming the file
        image = decode_image(self.images[index], self.images[index], mode='RGB')
        mask = decode_image(self.masks[index], self.masks[index], modes=self._MASK_MODES)
        if image.shape[:2] != mask.shape:
            raise DataFileError(f'image {self.images[index]} is {image.shape[:2]} but its mask is {mask.shape}')
        check_mask_values(mask, self.num_classes, self.ignore_index, self.masks[index])
        return image, mask
