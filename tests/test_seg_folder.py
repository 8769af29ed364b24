""" ``segfolder``: any segmentation data set as image + mask files paired by name (generated folders). """
import os

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from timm_normplugins.data import DatasetNotFoundError, create_dataset, create_transform, dataset_info


def _write(root, split_first=True, items=(('a', (20, 30)), ('b', (25, 18))), split='train', num_classes=3,
           config=None, mask_dir='masks', suffix='', seed=0):
    """JPEG images and PNG masks (class ids, 255 on the first row); returns {stem: (image, mask)}."""
    rng = np.random.default_rng(seed)
    images = os.path.join(root, split, 'images') if split_first else os.path.join(root, 'images', split)
    masks = os.path.join(root, split, mask_dir) if split_first else os.path.join(root, mask_dir, split)
    written = {}
    for stem, (h, w) in items:
        for folder in (images, masks):
            os.makedirs(os.path.dirname(os.path.join(folder, stem)), exist_ok=True)
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(img).save(os.path.join(images, stem + '.jpg'), quality=95)
        mask = rng.integers(0, num_classes, (h, w), dtype=np.uint8)
        mask[0] = 255
        Image.fromarray(mask).save(os.path.join(masks, stem + suffix + '.png'))  # grey PNG of class ids
        written[stem] = (img, mask)
    if config is not None:
        with open(os.path.join(root, 'dataset.yaml'), 'w') as f:
            yaml.safe_dump(config, f)
    return written


def test_split_folders_with_yaml(tmp_path):
    written = _write(tmp_path, config=dict(classes=['sky', 'road', 'car'], img_size=16))
    _write(tmp_path, split='val', items=(('c', (17, 21)),), seed=1)
    ds = create_dataset('segfolder', tmp_path, 'train')
    assert len(ds) == 2 and ds.task == 'seg' and ds.classes == ['sky', 'road', 'car'] and ds.ignore_index == 255
    for i, stem in enumerate(sorted(written)):
        image, mask = ds[i]  # paired by name: the mask is exactly the one written for that image
        assert image.shape == written[stem][0].shape and np.array_equal(mask, written[stem][1])
    info = dataset_info('seg_folder', tmp_path)
    assert (info.num_classes, info.task, info.ignore_index, info.img_size) == (3, 'seg', 255, (16, 16))
    # the segmentation pipeline at the folder's crop size; masks padded with the ignore index
    ds.transform = create_transform(ds, train=True)
    image, mask = ds[1]
    assert image.shape == (3, 16, 16) and mask.dtype == torch.int64 and mask.shape == (16, 16)
    # 'test' reads the held-out split that exists
    assert create_dataset('segfolder', tmp_path, 'test').split == 'val'


def test_images_split_layout_with_arguments_and_suffix(tmp_path):
    # ADE/Cityscapes style: images/<split>/<city>/..., annotations/<split>/..., a mask-name suffix, 16-bit masks
    items = (('city1/x', (12, 14)), ('city2/y', (15, 11)))
    written = _write(tmp_path, split_first=False, items=items, split='training', mask_dir='annotations',
                     suffix='_labelIds', num_classes=4, config=dict(mask_suffix='_labelIds'))
    mask16 = Image.fromarray(written['city1/x'][1].astype(np.uint16))
    mask16.save(tmp_path / 'annotations' / 'training' / 'city1' / 'x_labelIds.png')
    ds = create_dataset('segfolder', tmp_path, 'train', num_classes=4, ignore_index=255)
    assert len(ds) == 2 and ds.num_classes == 4 and ds.split == 'train'
    assert np.array_equal(ds[0][1], written['city1/x'][1]) and np.array_equal(ds[1][1], written['city2/y'][1])
    with pytest.raises(ValueError, match='num_classes / ignore_index are segfolder settings'):
        create_dataset('digits', num_classes=4)


def test_unpaired_files_are_named(tmp_path):
    _write(tmp_path, items=(('a', (8, 8)), ('b', (8, 8)), ('c', (8, 8))), config=dict(num_classes=3))
    os.remove(tmp_path / 'train' / 'masks' / 'b.png')
    os.remove(tmp_path / 'train' / 'images' / 'c.jpg')
    with pytest.raises(ValueError) as e:
        create_dataset('segfolder', tmp_path, 'train')
    assert '1 images without a mask (e.g. b)' in str(e.value) and '1 masks without an image (e.g. c)' in str(e.value)


def test_mask_values_out_of_range_are_an_error(tmp_path):
    _write(tmp_path, num_classes=5, config=dict(num_classes=3))  # masks hold ids 3 and 4 too
    ds = create_dataset('segfolder', tmp_path, 'train')
    with pytest.raises(ValueError, match=r'a\.png: mask values \[3, 4\] are neither a class id \(0\.\.2\) nor the '
                                         r'ignore index 255'):
        ds[0]
    assert create_dataset('segfolder', tmp_path, 'train', num_classes=5)[0][1].max() == 255


@pytest.mark.parametrize('config, kwargs, message', [
    (None, {}, 'needs its class count'),
    (dict(num_classes=3, colour='red'), {}, "unknown keys \\['colour'\\]"),
    (dict(classes=['a', 'b'], num_classes=3), {}, 'num_classes=3 but 2 classes'),
    (dict(num_classes=3), dict(ignore_index=1), 'outside the class ids 0..2'),
    (dict(num_classes=3, img_size=[1, 2, 3]), {}, 'img_size'),
])
def test_bad_settings(tmp_path, config, kwargs, message):
    _write(tmp_path, config=config)
    with pytest.raises(ValueError, match=message):
        create_dataset('segfolder', tmp_path, 'train', **kwargs)


def test_missing_and_lossy_files(tmp_path):
    _write(tmp_path, config=dict(num_classes=3))
    with pytest.raises(DatasetNotFoundError, match='extra split'):
        create_dataset('segfolder', tmp_path, 'extra')
    with pytest.raises(DatasetNotFoundError, match='not found'):
        create_dataset('segfolder', tmp_path / 'nowhere', 'train', num_classes=3)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / 'train' / 'masks' / 'a.jpg')
    with pytest.raises(ValueError, match='JPEG is lossy'):
        create_dataset('segfolder', tmp_path, 'train')


def test_training_recipe_builds_it(tmp_path):
    """What recipes/train.py --dataset segfolder uses: dataset_info, create_dataset and create_transform."""
    from timm_normplugins.training import build_datasets, parse_args, resolve_task
    _write(tmp_path, config=dict(num_classes=3, ignore_index=7, img_size=16))
    _write(tmp_path, split='val', items=(('c', (17, 21)),), seed=1)
    # ignore index 7 (the masks' 255 rows would then be out of range): rewrite them
    for mask_path in tmp_path.glob('*/masks/*.png'):
        mask = np.array(Image.open(mask_path))
        mask[mask == 255] = 7
        Image.fromarray(mask).save(mask_path)
    args = parse_args(['--dataset', 'segfolder', '--data-dir', str(tmp_path), '--mixup', 'none', '--loss', 'ce'])
    info, train, val = build_datasets(args)
    assert resolve_task(args, info) == 'seg' and (info.num_classes, info.ignore_index) == (3, 7)
    image, mask = train[0]
    assert image.shape == (3, 16, 16) and mask.shape == (16, 16)
    assert val.split == 'val' and val[0][1].shape == (17, 21) and int(val[0][1][0, 0]) == 7
