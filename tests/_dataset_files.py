""" Small datasets written in each real on-disk format, for the reader tests (never downloads). """
import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
from PIL import Image


def images_for(labels, size=(32, 32), chans=3, seed=0):
    """Random uint8 images whose first pixel encodes the label, so reordering bugs show."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(len(labels), *size, chans), dtype=np.uint8)
    images[:, 0, 0, 0] = np.asarray(labels, dtype=np.uint8) * 10
    return images


def write_cifar(root, num_classes=10, per_batch=6, seed=0):
    """CIFAR python version: pickled dicts with rows of R, G, B planes. Returns {split: (images, labels)}."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, 'cifar-10-batches-py' if num_classes == 10 else 'cifar-100-python')
    os.makedirs(folder)
    label_key = 'labels' if num_classes == 10 else 'fine_labels'
    files = {'train': [f'data_batch_{i}' for i in range(1, 6)], 'test': ['test_batch']} if num_classes == 10 \
        else {'train': ['train'], 'test': ['test']}
    out = {}
    for split, names in files.items():
        all_imgs, all_labels = [], []
        for k, name in enumerate(names):
            labels = rng.integers(0, num_classes, per_batch).tolist()
            imgs = images_for(labels, seed=seed + k + (100 if split == 'test' else 0))
            entry = {'batch_label': name, label_key: labels, 'filenames': [f'{i}.png' for i in range(per_batch)],
                     'data': imgs.transpose(0, 3, 1, 2).reshape(per_batch, 3072)}
            if num_classes == 100:
                entry['coarse_labels'] = [lab // 5 for lab in labels]
            with open(os.path.join(folder, name), 'wb') as f:
                pickle.dump(entry, f, protocol=2)
            all_imgs.append(imgs)
            all_labels += labels
        out[split] = (np.concatenate(all_imgs), np.asarray(all_labels))
    if num_classes == 10:
        from timm_normplugins.data.datasets import CIFAR10_CLASSES as names
        meta_name, meta = 'batches.meta', {'label_names': list(names), 'num_cases_per_batch': per_batch}
    else:
        from timm_normplugins.data.datasets import CIFAR100_CLASSES as names
        meta_name, meta = 'meta', {'fine_label_names': list(names), 'coarse_label_names': [str(i) for i in range(20)]}
    with open(os.path.join(folder, meta_name), 'wb') as f:
        pickle.dump(meta, f, protocol=2)
    return out


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx format: 0, 0, type 0x08 (ubyte), ndim; big-endian uint32 dims; raw bytes."""
    return struct.pack('>BBBB', 0, 0, 0x08, array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape) \
        + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fashion_mnist(folder, n_train=12, n_test=5, gz=True, seed=0):
    """Idx files as Debian's dataset-fashion-mnist (gz) or torchvision's raw folder (plain) holds them."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    out = {}
    for split, prefix, n in (('train', 'train', n_train), ('test', 't10k', n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        imgs = images_for(labels, size=(28, 28), chans=1, seed=seed + n)[..., 0]
        for stem, arr in ((f'{prefix}-images-idx3-ubyte', imgs), (f'{prefix}-labels-idx1-ubyte', labels)):
            data = idx_bytes(arr)
            if gz:
                with gzip.open(os.path.join(folder, stem + '.gz'), 'wb') as f:
                    f.write(data)
            else:
                with open(os.path.join(folder, stem), 'wb') as f:
                    f.write(data)
        out[split] = (imgs, labels)
    return out


def write_svhn(root, n_train=9, n_test=4, seed=0):
    """SVHN cropped digits .mat: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0."""
    import scipy.io
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    out = {}
    for split, n in (('train', n_train), ('test', n_test)):
        digits = np.arange(n) % 10  # every digit incl. 0 appears
        rng.shuffle(digits)
        imgs = images_for(digits, seed=seed + n)
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        scipy.io.savemat(os.path.join(root, f'{split}_32x32.mat'), {'X': imgs.transpose(1, 2, 3, 0), 'y': y})
        out[split] = (imgs, digits)
    return out


def voc_palette():
    """The PASCAL VOC colour map, as VOC's SegmentationClass PNGs carry it."""
    from timm_normplugins.cli.predict import voc_palette as palette
    return palette(256)


def write_voc(root, splits=None, seed=0):
    """VOCdevkit/VOC2012 with JPEGImages, palette-PNG SegmentationClass (255 borders) and split lists."""
    splits = splits or {'train': [('2007_000032', (60, 80)), ('2007_000039', (45, 33))],
                        'val': [('2007_000033', (50, 70))]}
    rng = np.random.default_rng(seed)
    voc = os.path.join(root, 'VOCdevkit', 'VOC2012')
    for sub in ('JPEGImages', 'SegmentationClass', os.path.join('ImageSets', 'Segmentation')):
        os.makedirs(os.path.join(voc, sub), exist_ok=True)
    out = {}
    for split, items in splits.items():
        with open(os.path.join(voc, 'ImageSets', 'Segmentation', split + '.txt'), 'w') as f:
            f.write(''.join(name + '\n' for name, _ in items))
        out[split] = []
        for name, (h, w) in items:
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(img).save(os.path.join(voc, 'JPEGImages', name + '.jpg'), quality=100, subsampling=0)
            mask = rng.integers(0, 21, (h, w), dtype=np.uint8)
            mask[0, :] = 255  # object borders are 'void'
            png = Image.fromarray(mask, mode='P')
            png.putpalette(voc_palette())
            png.save(os.path.join(voc, 'SegmentationClass', name + '.png'))
            out[split].append((img, mask))
    return out


def write_class_tar(path, classes=('cat', 'dog', 'emu'), per_class=3, size=(8, 6), seed=0):
    """A .tar of <class>/<n>.png, like ../shared/datasets/cifar10/*.tar (PNG here: lossless to compare)."""
    rng = np.random.default_rng(seed)
    expected = []
    with tarfile.open(path, 'w') as tf:
        for ci, cls in enumerate(classes):
            for k in range(per_class):
                img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format='PNG')
                info = tarfile.TarInfo(f'{cls}/{k:04d}.png')
                info.size = buf.tell()
                buf.seek(0)
                tf.addfile(info, buf)
                expected.append((img, ci))
    return expected
