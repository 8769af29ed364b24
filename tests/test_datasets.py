import os

import numpy as np
import pytest
import torch
from PIL import Image

from _dataset_files import write_cifar, write_class_tar, write_fashion_mnist, write_svhn, write_voc
from timm_normplugins.data import (
    DatasetNotFoundError, balanced_subset, create_dataset, create_transform, dataset_info, read_idx,
    segmentation_collate)
from timm_normplugins.data.datasets import CIFAR100_CLASSES, CIFAR10_CLASSES, FASHION_MNIST_CLASSES, VOC_CLASSES


def _check_raw_items(ds, images, labels):
    """Without a transform, items are the stored uint8 HWC images and int labels, in file order."""
    assert len(ds) == len(labels)
    np.testing.assert_array_equal(ds.targets, labels)
    assert ds.targets.dtype == np.int64
    for i in (0, len(ds) - 1):
        img, label = ds[i]
        assert isinstance(label, int) and label == labels[i]
        assert img.dtype == np.uint8
        np.testing.assert_array_equal(img, images[i])


@pytest.mark.parametrize('num_classes', [10, 100])
def test_cifar_pickle_batches(tmp_path, num_classes):
    written = write_cifar(tmp_path, num_classes)
    name = f'cifar{num_classes}'
    for split in ('train', 'test'):
        ds = create_dataset(name, tmp_path, split)
        _check_raw_items(ds, *written[split])
        assert ds.img_size == (32, 32) and ds.in_chans == 3 and ds.task == 'cls'
        assert ds.num_classes == num_classes
        assert tuple(ds.classes) == (CIFAR10_CLASSES if num_classes == 10 else CIFAR100_CLASSES)
        assert tuple(ds.classes) == dataset_info(name).classes
    assert len(create_dataset(name, tmp_path, 'train')) == (30 if num_classes == 10 else 6)  # all 5 batches
    # the batches folder itself also works as root; 'val' names the test split
    folder = 'cifar-10-batches-py' if num_classes == 10 else 'cifar-100-python'
    assert len(create_dataset(name, tmp_path / folder, 'val')) == len(written['test'][1])


def test_fashion_mnist_idx_gz_debian_layout(tmp_path):
    written = write_fashion_mnist(tmp_path, gz=True)
    for split in ('train', 'test'):
        ds = create_dataset('fashion_mnist', tmp_path, split)
        imgs, labels = written[split]
        _check_raw_items(ds, imgs[..., None], labels)
        assert ds.in_chans == 1 and ds.img_size == (28, 28)
        assert tuple(ds.classes) == FASHION_MNIST_CLASSES


def test_fashion_mnist_torchvision_raw_layout(tmp_path):
    written = write_fashion_mnist(tmp_path / 'FashionMNIST' / 'raw', gz=False)
    ds = create_dataset('fmnist', tmp_path, 'train')
    _check_raw_items(ds, written['train'][0][..., None], written['train'][1])


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / 'x-idx1-ubyte'
    bad.write_bytes(b'\x01\x02\x08\x01' + b'\x00' * 8)
    with pytest.raises(ValueError, match='not an idx file'):
        read_idx(str(bad))
    bad.write_bytes(b'\x00\x00\x08\x01\x00\x00\x00\x09' + b'\x00' * 3)
    with pytest.raises(ValueError, match='truncated'):
        read_idx(str(bad))


def test_svhn_mat(tmp_path):
    written = write_svhn(tmp_path)
    for split in ('train', 'test'):
        ds = create_dataset('svhn', tmp_path, split)
        _check_raw_items(ds, *written[split])  # label 10 in the file is digit 0
        assert ds.targets.min() == 0 and ds.targets.max() <= 9
        assert ds.classes == [str(i) for i in range(10)]


def test_voc2012_folder_tree(tmp_path):
    written = write_voc(tmp_path)
    ds = create_dataset('voc2012', tmp_path, 'train')
    assert len(ds) == 2 and ds.task == 'seg' and ds.num_classes == 21 and ds.ignore_index == 255
    assert tuple(ds.classes) == VOC_CLASSES
    for (img, mask), (want_img, want_mask) in zip((ds[0], ds[1]), written['train']):
        assert img.dtype == np.uint8 and img.shape == want_img.shape
        assert np.abs(img.astype(int) - want_img).mean() < 3  # JPEG is lossy
        np.testing.assert_array_equal(mask, want_mask)  # palette indices = class ids, 255 kept
    # 'test' names the val split (VOC2012's test labels are not public); root may be the VOC2012 folder
    assert len(create_dataset('voc', tmp_path / 'VOCdevkit' / 'VOC2012', 'test')) == 1


def test_voc2012_with_transform_returns_long_mask(tmp_path):
    write_voc(tmp_path)
    ds = create_dataset('voc2012', tmp_path, 'train', transform=create_transform('voc2012', train=True))
    img, mask = ds[1]  # 45x33 image: padded up to the 227 crop
    assert img.shape == (3, 227, 227) and img.dtype == torch.float32
    assert mask.shape == (227, 227) and mask.dtype == torch.int64
    assert (mask == 255).sum() >= 227 * 227 - 45 * 33


def test_voc_eval_batches_whole_images(tmp_path):
    write_voc(tmp_path, splits={'val': [('a', (50, 70)), ('b', (45, 33))]})
    ds = create_dataset('voc2012', tmp_path, 'val', transform=create_transform('voc2012', train=False))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=segmentation_collate)
    images, masks = next(iter(loader))
    assert images.shape == (2, 3, 50, 70) and masks.shape == (2, 50, 70) and masks.dtype == torch.int64
    assert torch.equal(masks[1, :45, :33], ds[1][1]) and (masks[1, 45:] == 255).all() and (masks[1, :, 33:] == 255).all()
    assert torch.equal(images[1, :, :45, :33], ds[1][0]) and (images[1, :, 45:] == 0).all()


def test_voc_rejects_rgb_masks(tmp_path):
    write_voc(tmp_path)
    mask_path = tmp_path / 'VOCdevkit' / 'VOC2012' / 'SegmentationClass' / '2007_000033.png'
    Image.open(mask_path).convert('RGB').save(mask_path)
    with pytest.raises(ValueError, match='class ids'):
        create_dataset('voc2012', tmp_path, 'val')[0]


def test_imagefolder_tar_and_folder(tmp_path):
    expected = write_class_tar(tmp_path / 'train.tar')
    for root in (tmp_path / 'train.tar', tmp_path):  # a folder holding <split>.tar picks it
        ds = create_dataset('imagefolder', root, 'train')
        assert ds.classes == ['cat', 'dog', 'emu'] and ds.num_classes == 3
        assert isinstance(ds.images, np.ndarray) and ds.images.shape == (9, 8, 6, 3)  # decoded once
        _check_raw_items(ds, np.stack([e[0] for e in expected]), np.array([e[1] for e in expected]))
    # a plain folder of class folders, decoded to grey
    for img, label in expected:
        folder = tmp_path / 'plain' / ['cat', 'dog', 'emu'][label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f'{len(os.listdir(folder))}.png')
    grey = create_dataset('imagefolder', tmp_path / 'plain', 'train', in_chans=1)
    assert grey.images.shape == (9, 8, 6, 1) and grey.in_chans == 1
    info = dataset_info('imagefolder', tmp_path / 'train.tar')
    assert info.num_classes == 3 and info.img_size == (8, 6) and info.classes == ('cat', 'dog', 'emu')


def test_imagefolder_subset_decodes_balanced_subset(tmp_path):
    write_class_tar(tmp_path / 'x.tar', per_class=4)
    ds = create_dataset('imagefolder', tmp_path / 'x.tar', max_samples=5)
    assert len(ds) == 5 and sorted(np.bincount(ds.targets).tolist()) == [1, 2, 2]


def test_digits_offline_deterministic_split():
    train, test = create_dataset('digits', split='train'), create_dataset('digits', split='test')
    assert len(train) + len(test) == 1797  # scikit-learn's bundled set
    assert train.images.shape[1:] == (32, 32, 3) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.images[..., 0], train.images[..., 2])  # grey in 3 channels
    assert train.images.max() == 255 and train.images.min() == 0
    # stratified: each class has 20% (+-1) of its images in test
    all_counts = np.bincount(train.targets) + np.bincount(test.targets)
    assert np.all(np.abs(np.bincount(test.targets) - all_counts / 5) <= 1)
    # deterministic and disjoint
    np.testing.assert_array_equal(create_dataset('digits', split='test').images, test.images)
    train_set = {im.tobytes() for im in train.images}
    assert sum(im.tobytes() in train_set for im in test.images) < 5  # only true duplicates in the source data
    assert dataset_info('digits').in_chans == 3 == train.in_chans


def test_max_samples_is_balanced_and_deterministic():
    targets = np.array([0, 0, 0, 0, 1, 2, 2, 1, 2, 0])
    picked = balanced_subset(targets, 5)
    assert picked.tolist() == sorted(picked.tolist())
    assert sorted(np.bincount(targets[picked], minlength=3).tolist()) == [1, 2, 2]
    np.testing.assert_array_equal(balanced_subset(targets, 5), picked)
    assert len(balanced_subset(targets, 100)) == len(targets)
    ds = create_dataset('digits', split='train', max_samples=30)
    assert len(ds) == 30 and np.all(np.bincount(ds.targets) == 3)


@pytest.mark.parametrize('name, expected', [
    ('cifar10', 'cifar-10-batches-py'), ('cifar100', 'cifar-100-python'), ('svhn', 'train_32x32.mat'),
    ('fashion_mnist', 'apt-get install dataset-fashion-mnist'), ('voc2012', 'VOCdevkit/VOC2012'),
    ('imagefolder', 'class folders'),
])
def test_missing_dataset_error_says_where_and_how(tmp_path, name, expected):
    root = tmp_path / 'empty'
    if name == 'imagefolder':
        root.mkdir()
    with pytest.raises(DatasetNotFoundError) as e:
        create_dataset(name, root, 'train')
    msg = str(e.value)
    assert expected in msg and str(root) in msg
    if name != 'imagefolder':
        assert 'download=True' in msg


def test_bad_arguments():
    with pytest.raises(ValueError, match='unknown dataset'):
        create_dataset('mnist3d', '.')
    with pytest.raises(ValueError, match='splits'):
        create_dataset('digits', split='extra')
    with pytest.raises(ValueError, match='needs root'):
        create_dataset('cifar10')
    with pytest.raises(ValueError, match='cannot be downloaded'):
        create_dataset('digits', download=True)
    with pytest.raises(ValueError, match='in_chans'):
        create_dataset('digits', in_chans=1)
    with pytest.raises(ValueError, match='needs root'):
        dataset_info('imagefolder')


def test_dataset_info_needs_no_files():
    for name, classes, chans, size, task in [
            ('cifar10', 10, 3, (32, 32), 'cls'), ('CIFAR-100', 100, 3, (32, 32), 'cls'),
            ('fashion-mnist', 10, 1, (28, 28), 'cls'), ('SVHN', 10, 3, (32, 32), 'cls'),
            ('voc2012', 21, 3, (227, 227), 'seg')]:
        info = dataset_info(name)
        assert (info.num_classes, info.in_chans, info.img_size, info.task) == (classes, chans, size, task)
        assert len(info.classes) == classes and len(info.mean) == chans
    assert dataset_info('voc').ignore_index == 255


def test_dataloader_workers_augment_independently():
    """Each worker reseeds the Compose from torch's worker seed: no lock-step augmentation across workers,
    and a torch.manual_seed makes the augmentation reproducible."""
    ds = create_dataset('digits', split='train', max_samples=8, transform=create_transform('digits', train=True))
    ds.images = np.repeat(ds.images[:1], 8, axis=0)  # one image: differences come from augmentation only

    def run():
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
        return torch.cat([x for x, _ in loader])

    first = run()
    worker0, worker1 = first[:4], first[4:]  # batch 0 from worker 0, batch 1 from worker 1
    assert not torch.equal(worker0, worker1)
    assert torch.equal(first, run())
