""" Readers for the on-disk formats of the papers' datasets.

Each classification reader decodes its split once into memory and returns ``(images, targets, classes)``:
``images`` a uint8 array ``(N, H, W, C)`` (or a list of ``(H, W, C)`` arrays when sizes differ),
``targets`` an int64 array ``(N,)``. torchvision does the reading where it has a reader (SVHN ``.mat``,
the VOC folder tree) and keeps its download path; files that are already on disk are read without
torchvision's md5 check, so copies in the real format (e.g. a test's generated files) load too. Downloads
are still verified against torchvision's checksums.

Reading a data file never runs code: CIFAR's pickled batches are parsed by ``safe_pickle.py``, which accepts
only CIFAR's layout (a dict of ints, strings, flat lists and uint8 arrays) and never unpickles, rather than
by torchvision's ``pickle.load``; and
images are decoded by PIL restricted to raster formats. A file that cannot be read raises
``DataFileError`` naming it.
"""
import functools
import gzip
import io
import os
import struct
import tarfile
import warnings
import zlib
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torchvision.datasets as tvd

from .safe_pickle import load_plain_pickle

__all__ = [
    'DatasetNotFoundError', 'DataFileError', 'read_cifar', 'read_fashion_mnist', 'read_svhn', 'read_digits',
    'read_image_folder', 'resolve_image_folder', 'image_folder_classes', 'decode_image',
    'find_voc2012', 'read_idx', 'balanced_subset', 'check_mat_file',
]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where they are expected; the message says where and how to get them."""


class DataFileError(ValueError):
    """A data file that is not what its format says (truncated, corrupt, or holding something else)."""


def _missing(what: str, expected: str, how: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(f'{what} not found. Expected {expected}. {how}')


def balanced_subset(targets: np.ndarray, max_samples: int) -> np.ndarray:
    """Indices of a deterministic, class-balanced subset of at most ``max_samples`` samples, in dataset order.

    Takes the first sample of every class, then the second of every class, and so on, so each class
    gets ``max_samples // num_classes`` samples (one more for the lowest class ids) while it has them.
    """
    targets = np.asarray(targets)
    if max_samples < 0:
        raise ValueError(f'max_samples must be >= 0, got {max_samples}')
    if max_samples >= len(targets):
        return np.arange(len(targets))
    order = np.argsort(targets, kind='stable')
    counts = np.bincount(targets)
    starts = np.cumsum(counts) - counts
    rank = np.empty(len(targets), dtype=np.int64)
    rank[order] = np.arange(len(targets)) - np.repeat(starts, counts)
    picked = np.lexsort((targets, rank))[:max_samples]
    return np.sort(picked)


# ---------------------------------------------------------------------------------------------- CIFAR

def _plain_pickle(path: str, what: str):
    try:
        return load_plain_pickle(path)
    except Exception as e:  # any parse failure of a crafted/truncated file: name the file, never run it
        raise DataFileError(f'{path} is not a {what} ({type(e).__name__}: {e})') from None


def _cifar_batch(path: str, label_key: str, num_classes: int):
    entry = _plain_pickle(path, 'CIFAR batch')
    data = entry.get('data') if isinstance(entry, dict) else None
    labels = entry.get(label_key) if isinstance(entry, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataFileError(f'{path} is not a CIFAR batch (its "data" is not a uint8 array of 3072-pixel rows)')
    if isinstance(labels, list) and not all(type(v) is int for v in labels):
        labels = []  # strings or bools where labels belong: reported just below
    labels = np.asarray(labels if isinstance(labels, (list, np.ndarray)) else [], dtype=np.int64)
    if labels.shape != (len(data),) or (len(labels) and not 0 <= labels.min() <= labels.max() < num_classes):
        raise DataFileError(f'{path} is not a CIFAR batch ({len(data)} images but its "{label_key}" do not '
                            f'give one label in [0, {num_classes}) each)')
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar(root: str, split: str, num_classes: int, download: bool = False):
    """CIFAR-10/100 python version: ``root/cifar-10-batches-py`` or ``root/cifar-100-python``."""
    cls = {10: tvd.CIFAR10, 100: tvd.CIFAR100}[num_classes]
    if os.path.basename(os.path.normpath(root)) == cls.base_folder:
        root = os.path.dirname(os.path.normpath(root))
    folder = os.path.join(root, cls.base_folder)
    batches = [f for f, _ in (cls.train_list if split == 'train' else cls.test_list)]
    files = batches + [cls.meta['filename']]
    if not all(os.path.isfile(os.path.join(folder, f)) for f in files):
        if not download:
            raise _missing(
                f'CIFAR-{num_classes} ({split} split)', f'{", ".join(files)} in {folder}',
                f'Pass download=True to fetch {cls.url}, or extract that archive into {root}.')
        from torchvision.datasets.utils import download_and_extract_archive
        download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5)  # md5-checked
    label_key = 'labels' if num_classes == 10 else 'fine_labels'
    parts = [_cifar_batch(os.path.join(folder, f), label_key, num_classes) for f in batches]
    meta_path = os.path.join(folder, cls.meta['filename'])
    meta = _plain_pickle(meta_path, 'CIFAR meta file')
    classes = meta.get(cls.meta['key']) if isinstance(meta, dict) else None
    if not isinstance(classes, list) or len(classes) != num_classes or not all(isinstance(c, str) for c in classes):
        raise DataFileError(f'{meta_path} is not a CIFAR meta file (no list of {num_classes} class names '
                            f'under "{cls.meta["key"]}")')
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    return images, np.concatenate([p[1] for p in parts]), list(classes)


# -------------------------------------------------------------------------------------- Fashion-MNIST

DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'


MAX_IDX_BYTES = 1 << 31  # Fashion-MNIST's largest file holds 47 MB
IDX_EXPANSION = 64  # a .gz idx file may expand this much (Fashion-MNIST's: about 2-5x), so a small one asks for little
_IDX_FLOOR = 64 << 20


def read_idx(path: str) -> np.ndarray:
    """An idx file (the MNIST format), plain or gzip-compressed, as a uint8 array.

    torchvision's ``read_sn3_pascalvincent_tensor`` reads only uncompressed files, Debian ships ``.gz``.
    The header is checked before the data is read, and no more than it announces is decompressed (a
    gzip bomb stops there). Raises ``DataFileError`` naming the file.
    """
    opener = gzip.open if path.endswith('.gz') else open
    try:
        with opener(path, 'rb') as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise DataFileError(f'{path} is not an idx file (bad magic number)')
            type_code, ndim = head[2], head[3]
            if type_code != 0x08:
                raise DataFileError(f'{path}: only unsigned-byte idx files are supported, got type code {type_code:#x}')
            if not 1 <= ndim <= 4:
                raise DataFileError(f'{path} is not an idx file of images or labels ({ndim} dimensions)')
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) != 4 * ndim:
                raise DataFileError(f'{path} is truncated: its header ends after {4 + len(raw_dims)} bytes')
            dims = struct.unpack(f'>{ndim}I', raw_dims)
            size = int(np.prod(dims, dtype=object))
            if size > MAX_IDX_BYTES:
                raise DataFileError(f'{path}: header says {dims}, {size} bytes, more than an idx file may hold '
                                    f'({MAX_IDX_BYTES})')
            on_disk = os.path.getsize(path)
            if opener is open and size > on_disk - 4 - 4 * ndim:  # before read() reserves what the header says
                raise DataFileError(f'{path} is truncated: header says {dims}, the file holds '
                                    f'{on_disk - 4 - 4 * ndim} values')
            limit = max(_IDX_FLOOR, IDX_EXPANSION * on_disk)
            if opener is not open and size > limit:
                raise DataFileError(f'{path}: header says {dims}, {size} bytes from a {on_disk}-byte gzip file, more '
                                    f'than {IDX_EXPANSION}x its size; refused before decompressing')
            parts, got = [], 0
            while got <= size:  # in chunks: memory follows what the stream holds, not what the header claims
                part = f.read(min(1 << 24, size + 1 - got))
                if not part:
                    break
                parts.append(part)
                got += len(part)
            data = b''.join(parts)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataFileError(f'{path} is not a readable idx file ({type(e).__name__}: {_one_line(e)})') from None
    if len(data) < size:
        raise DataFileError(f'{path} is truncated: header says {dims}, found {len(data)} values')
    if len(data) > size:
        raise DataFileError(f'{path} holds more data than its header says ({dims})')
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _find_idx(dirs: Sequence[str], stem: str) -> Optional[str]:
    for d in dirs:
        for name in (stem, stem + '.gz'):
            if os.path.isfile(os.path.join(d, name)):
                return os.path.join(d, name)
    return None


def read_fashion_mnist(root: str, split: str, download: bool = False):
    """Fashion-MNIST idx files (``.gz`` or not) in ``root``, in ``root/FashionMNIST/raw`` (torchvision's
    download folder) or ``root/fashion-mnist``; Debian's ``dataset-fashion-mnist`` package installs them in
    ``/usr/share/datasets/fashion-mnist``, which works as ``root``."""
    prefix = 'train' if split == 'train' else 't10k'
    tv_raw = os.path.join(root, 'FashionMNIST', 'raw')
    dirs = [root, tv_raw, os.path.join(root, 'fashion-mnist')]
    stems = (f'{prefix}-images-idx3-ubyte', f'{prefix}-labels-idx1-ubyte')
    paths = [_find_idx(dirs, s) for s in stems]
    if None in paths and download:
        tvd.FashionMNIST(root, train=split == 'train', download=True)
        paths = [_find_idx(dirs, s) for s in stems]
    if None in paths:
        raise _missing(
            f'Fashion-MNIST ({split} split)', f'{stems[0]}[.gz] and {stems[1]}[.gz] in {root} or {tv_raw}',
            'Pass download=True to fetch them with torchvision, or `apt-get install dataset-fashion-mnist` '
            f"and use root='{DEBIAN_FASHION_MNIST}'.")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataFileError(f'Fashion-MNIST files disagree: images {images.shape} from {paths[0]}, '
                            f'labels {labels.shape} from {paths[1]}')
    if len(labels) and labels.max() > 9:
        raise DataFileError(f'{paths[1]}: label {int(labels.max())} is not a Fashion-MNIST class (0..9)')
    return images[..., None], labels.astype(np.int64), list(tvd.FashionMNIST.classes)


# ----------------------------------------------------------------------------------------------- SVHN

# SVHN's largest file (extra) holds 1.6 GB of pixels; a compressed variable may expand at most this much, so a
# small crafted file cannot ask for gigabytes (real SVHN files compress by about 1.25x)
MAX_MAT_BYTES = 1 << 32
MAT_EXPANSION = 16
_MAT_FLOOR = 64 << 20
_MI_MATRIX, _MI_COMPRESSED = 14, 15


def check_mat_file(path: str, what: str = 'a MATLAB 5 .mat file') -> int:
    """Walk a MATLAB 5 file's top-level elements and return the bytes its variables hold uncompressed.

    Compressed variables are inflated in a stream and counted (nothing kept) up to
    ``max(64 MiB, MAT_EXPANSION × file size)`` (at most ``MAX_MAT_BYTES``); an uncompressed one must lie
    inside the file. Raises ``DataFileError`` naming the file, before scipy allocates anything.
    """
    size = os.path.getsize(path)
    limit = min(MAX_MAT_BYTES, max(_MAT_FLOOR, MAT_EXPANSION * size))
    total = 0
    with open(path, 'rb') as f:
        head = f.read(128)
        if len(head) < 128 or not head.startswith(b'MATLAB 5.0') or head[126:128] not in (b'IM', b'MI'):
            raise DataFileError(f'{path} is not {what} (no MATLAB 5 header)')
        order = '<' if head[126:128] == b'IM' else '>'
        while True:
            tag = f.read(8)
            if not tag:
                return total
            if len(tag) < 8:
                raise DataFileError(f'{path} is not {what} (truncated: a cut element tag at byte {f.tell() - len(tag)})')
            kind, nbytes = struct.unpack(order + 'II', tag)
            if kind not in (_MI_MATRIX, _MI_COMPRESSED):
                raise DataFileError(f'{path}: top-level element of type {kind}, expected a variable')
            start = f.tell()
            if start + nbytes > size:
                raise DataFileError(f'{path} is not {what} (truncated: an element of {nbytes} bytes at byte '
                                    f'{start}, the file has {size})')
            if kind == _MI_MATRIX:
                total += nbytes
            else:
                inflater, left, chunk = zlib.decompressobj(), nbytes, 1 << 20
                while left:
                    data = f.read(min(chunk, left))
                    left -= len(data)
                    while data:
                        total += len(inflater.decompress(data, chunk))
                        data = inflater.unconsumed_tail
                        if total > limit:
                            raise DataFileError(
                                f'{path}: its compressed variables expand to more than {limit} bytes (a {size}-byte '
                                f'file may hold at most {MAT_EXPANSION}x its size, {MAX_MAT_BYTES} in all); refused '
                                'before loading')
                    if inflater.eof:
                        break
            if total > limit:
                raise DataFileError(f'{path}: its variables hold more than {limit} bytes; refused before loading')
            f.seek(start + nbytes + (-nbytes % 8 if kind == _MI_MATRIX else 0))


def read_svhn(root: str, split: str, download: bool = False):
    """SVHN cropped digits: ``root/{train,test,extra}_32x32.mat``; label 10 is digit 0 (mapped as torchvision does).

    The file is checked before scipy reads it (``check_mat_file``: sizes bounded by the file's, the
    variables' shapes from their headers), and only ``X`` and ``y`` are loaded.
    """
    url, filename, md5 = tvd.SVHN.split_list[split]
    path = os.path.join(root, filename)
    if not os.path.isfile(path):
        if not download:
            raise _missing(f'SVHN ({split} split)', path, f'Pass download=True to fetch {url}.')
        from torchvision.datasets.utils import download_url
        download_url(url, root, filename, md5)  # md5-checked
    import scipy.io
    bad = f'{path} is not an SVHN .mat file'
    try:
        check_mat_file(path, 'an SVHN .mat file')
        shapes = {name: (shape, kind) for name, shape, kind in scipy.io.whosmat(path)}
        x_shape, x_kind = shapes.get('X', ((), None))
        y_shape, y_kind = shapes.get('y', ((), None))
        n = x_shape[3] if len(x_shape) == 4 else -1
        if tuple(x_shape[:3]) != (32, 32, 3) or x_kind != 'uint8' or sorted(y_shape) != [1, n] \
                or y_kind in (None, 'cell', 'struct', 'object', 'sparse', 'char', 'function'):
            raise DataFileError(f'{bad} (X must be uint8 32x32x3xN and y N labels; its header says X {x_kind} '
                                f'{tuple(x_shape)}, y {y_kind} {tuple(y_shape)})')
        mat = scipy.io.loadmat(path, variable_names=['X', 'y'])
        data, labels = np.asarray(mat['X']), np.asarray(mat['y']).reshape(-1).astype(np.int64)
    except DataFileError:
        raise
    except Exception as e:  # scipy reads MATLAB 5 files as data (no code); anything it trips over is the file's
        raise DataFileError(f'{bad} ({type(e).__name__}: {_one_line(e)})') from None
    if data.dtype != np.uint8 or data.shape[:3] != (32, 32, 3) or labels.shape != (data.shape[3],):
        raise DataFileError(f'{bad} (X must be uint8 32x32x3xN and y N labels; got {data.dtype} '
                            f'{tuple(data.shape)} and {tuple(labels.shape)})')
    if len(labels) and not 1 <= labels.min() <= labels.max() <= 10:
        raise DataFileError(f'{path}: labels outside 1..10 (got {int(labels.min())}..{int(labels.max())})')
    labels[labels == 10] = 0
    images = np.ascontiguousarray(data.transpose(3, 0, 1, 2))  # (32, 32, 3, N) -> (N, H, W, C)
    return images, labels, [str(i) for i in range(10)]


# --------------------------------------------------------------------------------------------- digits

DIGITS_SIZE = 32


@functools.lru_cache(maxsize=1)
def _all_digits():
    import cv2
    from sklearn.datasets import load_digits
    bunch = load_digits()
    small = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # values are 0..16
    big = np.stack([cv2.resize(im, (DIGITS_SIZE, DIGITS_SIZE), interpolation=cv2.INTER_LINEAR) for im in small])
    targets = bunch.target.astype(np.int64)
    rank = np.zeros(len(targets), dtype=np.int64)  # rank of each image among those of its class
    seen = np.zeros(10, dtype=np.int64)
    for i, t in enumerate(targets):
        rank[i] = seen[t]
        seen[t] += 1
    for a in (big, targets, rank):
        a.setflags(write=False)  # cached: callers get copies through fancy indexing
    return big, targets, rank


def read_digits(split: str):
    """scikit-learn's bundled 8x8 digits (1,797 images, no download), upscaled to 32x32, grey in 3 channels.

    The split is deterministic and stratified: every 5th image of each class (in file order) is 'test'.
    """
    big, targets, rank = _all_digits()
    keep = (rank % 5 == 4) if split == 'test' else (rank % 5 != 4)
    images = np.repeat(big[keep][..., None], 3, axis=-1)
    return images, targets[keep], [str(i) for i in range(10)]


# -------------------------------------------------------------------------------------- image folders

_SPLIT_FOLDERS = {
    'train': ('train', 'training'),
    'val': ('val', 'valid', 'validation'),
    'test': ('test', 'testing'),
}
# a dataset with one held-out split names it 'val' or 'test' (see datasets._canonical_split): either folder serves
_HELD_OUT = {'val': ('val', 'test'), 'test': ('test', 'val')}


def _split_candidates(root: str, names: Sequence[str]) -> List[str]:
    return [c for name in names for c in (os.path.join(root, name + '.tar'), os.path.join(root, name))
            if os.path.exists(c)]


def _split_tree_parts(root: str) -> List[str]:
    """The split folders / tars (train/, val.tar, validation/, ...) directly in ``root``."""
    return _split_candidates(root, [n for names in _SPLIT_FOLDERS.values() for n in names])


def resolve_image_folder(root: str, split: str) -> str:
    """Where ``split`` of an image folder is: ``root`` itself if it is a ``.tar``; ``root/<split>.tar`` or
    ``root/<split>/`` (``val``, ``valid``, ``validation``; ``test``, ``testing``; ``train``, ``training``) when
    ``root`` is a split tree; ``root`` when it holds no split folder at all (a plain tree of class folders).

    A split tree is never read as a whole: that would merge its splits (e.g. validate on train + val).
    Asking for the held-out split ('val' or 'test') takes whichever of ``val``/``test`` exists (``val`` first
    when 'val' is asked, ``test`` first when 'test' is asked); a split the tree lacks is a
    ``DatasetNotFoundError`` naming the folders that are there.
    """
    if os.path.isfile(root):
        if not root.endswith('.tar'):
            raise ValueError(f'imagefolder root must be a folder or a .tar of class folders, got {root}')
        return root
    if not os.path.isdir(root):
        raise _missing('image folder', f'a folder of class folders or a .tar of them at {root}',
                       'Check the path.')
    for group in _HELD_OUT.get(split, (split,)):
        found = _split_candidates(root, _SPLIT_FOLDERS.get(group, (group,)))
        if found:
            return found[0]
    parts = _split_tree_parts(root)
    if parts:
        wanted = ', '.join(n + '/' for g in _HELD_OUT.get(split, (split,)) for n in _SPLIT_FOLDERS.get(g, (g,)))
        raise _missing(f'image folder {split!r} split', f'one of {wanted} (or .tar) in {root}',
                       f'{root} is a split tree ({", ".join(os.path.basename(p) for p in parts)}); its splits are '
                       'never merged. Pick one of them with the split option (e.g. --val-split).')
    return root


def _check_tar(path: str) -> None:
    """An image tar must be a plain (uncompressed) tar whose members fit in it.

    timm opens it with ``tarfile.open``, which would inflate a compressed archive named ``.tar`` and expand
    sparse members: a small file could then hand the decoder gigabytes.
    """
    size = os.path.getsize(path)
    try:
        with tarfile.open(path, 'r:') as tf:
            declared = sum(m.size for m in tf.getmembers() if m.isfile())
            sparse = [m.name for m in tf.getmembers() if m.issparse()]
    except tarfile.ReadError as e:
        raise DataFileError(f'{path} is not a plain tar file ({_one_line(e)}); compressed archives are not read: '
                            'extract it, or re-create it uncompressed') from None
    if sparse:
        raise DataFileError(f'{path}: member {sparse[0]} is a sparse file; refused')
    if declared > size:
        raise DataFileError(f'{path}: its members declare {declared} bytes in a {size}-byte file; refused')


def image_folder_reader(root: str, split: str):
    """timm's reader for a folder or tar of class folders (the class is the folder name)."""
    from timm.data.readers import create_reader
    path = resolve_image_folder(root, split)
    if os.path.isfile(path):
        _check_tar(path)
    try:
        reader = create_reader('', root=path)
    except (RuntimeError, AssertionError, ValueError) as e:  # timm's errors for empty trees / tars
        raise _missing('image folder', f'class folders of images in {path}', f'({type(e).__name__}: {e})') from e
    except tarfile.ReadError as e:
        raise ValueError(f'{path} is not a readable tar file ({e})') from e
    mapping = getattr(reader, 'class_to_idx', None) or getattr(reader, 'class_name_to_idx')
    classes = [c for c, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
    return reader, classes


def _empty_class_folders(path: str) -> List[str]:
    """Top-level folders of a class-folder tree holding no image timm would read (at any depth)."""
    if not os.path.isdir(path):
        return []  # a tar lists only its files: an empty class cannot be seen, nor shift anything
    from timm.data.readers.img_extensions import get_img_extensions
    types = get_img_extensions(as_set=True)
    empty = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=True) and not any(
                os.path.splitext(f)[1].lower() in types
                for _, _, files in os.walk(entry.path, followlinks=True) for f in files):
            empty.append(entry.path)
    return empty


def image_folder_classes(root: str, split: str) -> Tuple[object, str, List[str], np.ndarray]:
    """``(reader, path, classes, targets)`` of one split, its labels numbered by the TRAINING split's classes.

    The class list is the training split's folder names (``root/train`` of a split tree; ``root`` itself
    for a plain tree or a ``.tar``); another split's images are mapped to it by class name, so a class
    folder that is missing or empty there shifts no label. A class folder with images in another split
    but not in the training split, or an empty class folder in the split the class list comes from, is a
    ``DataFileError`` naming the folder.
    """
    reader, own = image_folder_reader(root, split)
    path = resolve_image_folder(root, split)
    source = path
    if os.path.isdir(root) and path != root and split != 'train':
        try:
            source = resolve_image_folder(root, 'train')
        except DatasetNotFoundError:
            source = path  # a tree without a training split (e.g. only val/ to evaluate): its own classes
    if source == path:
        empty = _empty_class_folders(path)
        if empty:
            raise DataFileError(f'{empty[0]} holds no image: the class list is taken from the folders of {path}, '
                                'so an empty class folder would drop its class and shift every label after it; '
                                'remove the folder or add its images')
        return reader, path, own, _reader_targets(reader)
    _, classes = image_folder_reader(root, 'train')
    index = {c: i for i, c in enumerate(classes)}
    extra = [c for c in own if c not in index]
    if extra:
        where = os.path.join(path, extra[0]) if os.path.isdir(path) else f'{path}:{extra[0]}/'
        raise DataFileError(f'{where}: class {extra[0]!r} is not a class of the training split {source} '
                            f'(classes: {", ".join(classes[:10])}{" ..." if len(classes) > 10 else ""}); its '
                            'labels would not match the model\'s outputs')
    remap = np.array([index[c] for c in own], dtype=np.int64)
    return reader, path, classes, remap[_reader_targets(reader)]


def _reader_targets(reader) -> np.ndarray:
    targets = getattr(reader, 'targets', None)
    if targets is None:  # ReaderImageFolder keeps (path, target) pairs
        targets = [t for _, t in reader.samples]
    return np.asarray(targets, dtype=np.int64)


# raster formats only: PIL picks the decoder from the file's bytes, and its EPS decoder runs Ghostscript
IMAGE_FORMATS = ('JPEG', 'PNG', 'BMP', 'GIF', 'TIFF', 'WEBP', 'PPM', 'TGA')
# images larger than this are refused from their header, before decoding (PIL's own default: it only warns
# between this and twice this); a small file can claim a huge image (a decompression bomb)
MAX_IMAGE_PIXELS = 89_478_485


def decode_image(src, name: str, mode: Optional[str] = None, modes: Optional[Sequence[str]] = None) -> np.ndarray:
    """Decode an image file (a path or a file object) to a uint8 array; errors name ``name``.

    ``mode``: convert to this PIL mode ('RGB', 'L'); ``modes``: keep the pixels as they are, but only in
    one of these modes (masks of class ids: 'P', 'L').
    """
    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():  # PIL warns of a big image; we refuse it just below instead
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            im = Image.open(src, formats=IMAGE_FORMATS)
        with im:
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataFileError(f'{name}: {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS} an image may '
                                    'have (readers.MAX_IMAGE_PIXELS); refused before decoding')
            if modes is not None and im.mode not in modes:
                raise DataFileError(f'{name}: PIL mode {im.mode}, expected one of {list(modes)} '
                                    '(masks hold class ids: palette or grey)')
            return np.array(im.convert(mode) if mode else im)  # np.array copies: writable
    except DataFileError:
        raise
    except UnidentifiedImageError:
        raise DataFileError(f'{name} is not an image in a supported format ({", ".join(IMAGE_FORMATS)})') from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError) as e:
        raise DataFileError(f'{name} is not a readable image ({_one_line(e)})') from None


def _one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _sample_name(reader, path: str, index: int) -> str:
    """Where a sample lives, for messages: its file, or ``TAR:member`` inside a tar."""
    member = reader.filename(index)
    if os.path.isabs(member):
        return member
    return f'{path}:{member}' if os.path.isfile(path) else os.path.join(path, member)


def read_image_folder(root: str, split: str, in_chans: int = 3, max_samples: Optional[int] = None):
    """A folder or ``.tar`` of class folders through timm's readers, decoded once (only the kept samples)."""
    if in_chans not in (1, 3):
        raise ValueError(f'imagefolder decodes to 1 (grey) or 3 (RGB) channels, got in_chans={in_chans}')
    reader, path, classes, targets = image_folder_classes(root, split)
    indices = balanced_subset(targets, max_samples) if max_samples is not None else np.arange(len(targets))
    mode = 'RGB' if in_chans == 3 else 'L'
    images: List[np.ndarray] = []
    for i in indices:
        f, _ = reader[int(i)]
        with f:
            img = decode_image(io.BytesIO(f.read()), _sample_name(reader, path, int(i)), mode=mode)
        images.append(img if img.ndim == 3 else img[..., None])
    if images and all(im.shape == images[0].shape for im in images):
        images = np.stack(images)
    return images, targets[indices], classes


# ------------------------------------------------------------------------------------------------ VOC

VOC_LAYOUT = 'VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation/<split>.txt}'


def find_voc2012(root: str, split: str, download: bool = False) -> Tuple[List[str], List[str]]:
    """Image and mask paths of a VOC2012 segmentation split (torchvision's ``VOCSegmentation`` lists them).

    ``root`` may hold ``VOCdevkit/`` or be ``VOCdevkit`` or ``VOCdevkit/VOC2012`` itself.
    """
    root = os.path.normpath(root)
    if os.path.basename(root) == 'VOC2012' and os.path.basename(os.path.dirname(root)) == 'VOCdevkit':
        root = os.path.dirname(os.path.dirname(root))
    elif os.path.basename(root) == 'VOCdevkit':
        root = os.path.dirname(root)
    voc = os.path.join(root, 'VOCdevkit', 'VOC2012')
    split_file = os.path.join(voc, 'ImageSets', 'Segmentation', split + '.txt')
    if not download and not os.path.isfile(split_file):
        raise _missing(f'VOC2012 segmentation ({split} split)', f'{root}/{VOC_LAYOUT}',
                       'Pass download=True to fetch VOCtrainval_11-May-2012.tar (2 GB) with torchvision, '
                       f'or extract it into {root}.')
    ds = tvd.VOCSegmentation(root, year='2012', image_set=split, download=download)
    missing = [p for p in ds.images + ds.masks if not os.path.isfile(p)]
    if missing:
        raise _missing(f'VOC2012 files listed in {split_file}', f'{len(missing)} more files, e.g. {missing[0]}',
                       'The extraction is incomplete.')
    return list(ds.images), list(ds.masks)
